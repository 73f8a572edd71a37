"""Prompt files and chat messages. The built-in prompts and few-shot seeds live in endpoint/prompts/; a team
points generate.prompts_dir (or eval.judge.prompts_dir) at a folder holding its own files of the same names:
`<kind>.txt` (the system prompt), `<kind>.seeds.jsonl` (few-shot examples: {"context", "response"} per line),
`detail_questions.txt` (one instruction per line), `judge.txt`, `arbitrate.txt`."""

from __future__ import annotations

import base64
import json
import mimetypes
from pathlib import Path

from lora_llava.errors import ConfigError

BUILT_IN = Path(__file__).resolve().parent / "prompts"


def prompt_file(prompts_dir: str | None, name: str, key: str) -> Path:
    path = Path(prompts_dir or BUILT_IN) / name
    if not path.is_file():
        raise ConfigError(f"{key}={prompts_dir}: it has no {name}; a prompts folder holds the files of "
                          f"{BUILT_IN} (copy that folder and edit it)")
    return path


def read_text(prompts_dir: str | None, name: str, key: str) -> str:
    return prompt_file(prompts_dir, name, key).read_text(encoding="utf-8").strip()


def read_seeds(prompts_dir: str | None, kind: str, key: str) -> list[dict]:
    path = prompt_file(prompts_dir, f"{kind}.seeds.jsonl", key)
    seeds = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            seed = json.loads(line)
            if not isinstance(seed, dict) or not {"context", "response"} <= set(seed):
                raise ConfigError(f"{path}, line {number}: a seed needs `context` and `response`")
            seeds.append(seed)
    return seeds


# What OpenAI-compatible servers accept in a data URL; any other format PIL reads is sent re-encoded as PNG.
SENT_AS_IS = ("image/png", "image/jpeg", "image/gif", "image/webp")


def image_part(path: Path) -> dict:
    """An image as an OpenAI `image_url` content part (a base64 data URI: no file server needed). PNG, JPEG, GIF
    and WebP files are sent byte for byte; others (BMP, TIFF, ...) decoded and re-encoded as PNG."""
    path = Path(path)
    mime = mimetypes.guess_type(path.name)[0]
    if mime in SENT_AS_IS:
        raw = path.read_bytes()
    else:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        with Image.open(path) as image:
            image.convert("RGB").save(buffer, format="PNG")
        mime, raw = "image/png", buffer.getvalue()
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"}}


def user_message(text: str, image: Path | None = None) -> dict:
    if image is None:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "text", "text": text}, image_part(image)]}


def as_text(messages: list[dict]) -> str:
    """Messages as a person reads them (images shown as a placeholder), for dry runs and eval/ files."""
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = "\n".join(p["text"] if p["type"] == "text" else "[image]" for p in content)
        out.append(f"[{message['role']}]\n{content}")
    return "\n\n".join(out)

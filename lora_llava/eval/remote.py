"""Ask a served model (any OpenAI-compatible server: `transformers serve`, `vllm serve`) the question `predict`
would ask a local one: the same turns, the image inline as a data URL, greedy decoding. Needs
`pip install 'lora_llava[endpoint]'` (the openai package)."""

from __future__ import annotations

import base64
import io
import os

from lora_llava.data.samples import IMAGE_PLACEHOLDER, Turn
from lora_llava.errors import UserError


def data_url(path: str) -> str:
    """The image file as a PNG data URL (decoded and re-encoded, so any format PIL reads is sent the same way)."""
    from PIL import Image

    buffer = io.BytesIO()
    with Image.open(path) as image:
        image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def to_messages(turns: list[Turn], image: str | None, system_prompt: str | None = None) -> list[dict]:
    """OpenAI chat messages; the turn holding `<image>` carries the image before its text, as the chat template
    of a LLaVA checkpoint places it."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for turn in turns:
        if image and IMAGE_PLACEHOLDER in turn.text:
            text = turn.text.replace(f"{IMAGE_PLACEHOLDER}\n", "").replace(IMAGE_PLACEHOLDER, "")
            content = [{"type": "image_url", "image_url": {"url": data_url(image)}}, {"type": "text", "text": text}]
            messages.append({"role": turn.role, "content": content})
        else:
            messages.append({"role": turn.role, "content": turn.text})
    return messages


def client_for(url: str):
    try:
        from openai import OpenAI
    except ImportError:
        raise UserError("endpoint=URL needs the openai package: pip install 'lora_llava[endpoint]'") from None
    base = url.rstrip("/")
    base = base if base.endswith("/v1") else base + "/v1"
    # Local servers take any key; a hosted one reads OPENAI_API_KEY, as the openai package itself does.
    return OpenAI(base_url=base, api_key=os.environ.get("OPENAI_API_KEY") or "none", max_retries=2)


def ask_endpoint(url: str, turns: list[Turn], image: str | None, max_new_tokens: int,
                 model: str | None = None, system_prompt: str | None = None) -> str:
    """The served model's greedy reply. `model`: the name the server knows it by (default: the first listed)."""
    import openai

    client = client_for(url)
    try:
        model = model or client.models.list().data[0].id
        reply = client.chat.completions.create(model=model, messages=to_messages(turns, image, system_prompt),
                                               max_tokens=max_new_tokens, temperature=0.0)
    except openai.APIConnectionError as err:
        raise UserError(f"endpoint={url}: cannot connect ({err}); is the server running?") from None
    except openai.APIStatusError as err:
        raise UserError(f"endpoint={url}: the server answered {err.status_code}: {err.message}") from None
    return (reply.choices[0].message.content or "").strip()

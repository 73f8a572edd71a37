"""LLaVA's conversation data: a JSON list or JSONL of records like
`{"id": ..., "image": "a.png" (or a list), "conversations": [{"from": "human", "value": "<image>\\nQ"},
{"from": "gpt", "value": "A"}, ...]}`. Image paths are relative to `data.image_root`, as with LLaVA's --image_folder.

Records are converted leniently: a record with unknown roles, no answer or a wrong number of images becomes a
Sample that the screening (data/screen.py) rejects with its id and the reason, so `on_error=skip` can leave it out.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lora_llava.data.samples import IMAGE_PLACEHOLDER, Sample, Turn
from lora_llava.data.splits import given_files, split_from_filename
from lora_llava.errors import ConfigError, DataError, MissingPathError

log = logging.getLogger("lora_llava")

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


def existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"data file {path} does not exist (check data.path / data.data_files)")
    return path


def read_text(path: Path) -> str:
    """The file's text: UTF-8, with or without the byte-order mark spreadsheets write ("CSV UTF-8"). Any other
    encoding is an error naming the file and the line of the first byte that is not UTF-8."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x}); save the file as "
                        "UTF-8 (in a spreadsheet: 'CSV UTF-8')") from None
    return text.removeprefix("\ufeff")


def read_jsonl(path: Path) -> list[dict]:
    """One JSON object per non-empty line; a malformed line is named by file and line number."""
    records = []
    for line_no, line in enumerate(read_text(path).split("\n"), 1):  # not splitlines: JSON may hold U+2028
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}, line {line_no}: not valid JSON ({err})") from None
    return records


def read_records(path: str | Path) -> list[dict]:
    """The records of a .json (a list) or .jsonl (one object per line) file; malformed JSON names file and line."""
    path = existing_file(path)
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    try:
        records = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of conversation records, got {type(records).__name__}")
    return records


def as_list(value: Any) -> list:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _text_of(content: Any) -> str:
    """A message's text; chat-template style content (a list of {"type": "image"} / {"type": "text", "text": ...}
    parts, as in many Hub datasets) becomes text with an <image> placeholder per image part."""
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(IMAGE_PLACEHOLDER if isinstance(p, dict) and p.get("type") == "image"
                       else str(p.get("text") or "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def record_to_sample(record: Any, fallback_id: str) -> Sample:
    """One LLaVA conversation record as a Sample; extra keys go to meta."""
    if not isinstance(record, dict):
        return Sample(fallback_id, [], meta={"record": record})
    sample_id = str(record.get("id", fallback_id))
    turns = []
    for message in as_list(record.get("conversations")):
        message = message if isinstance(message, dict) else {"from": None, "value": message}
        role = message.get("from", message.get("role"))
        text = _text_of(message.get("value", message.get("content")))
        turns.append(Turn(ROLES.get(str(role).lower(), str(role)), text))
    images = as_list(record.get("image", record.get("images")))
    meta = {k: v for k, v in record.items() if k not in ("id", "image", "images", "conversations")}
    return Sample(sample_id, turns, [str(ref) for ref in images], meta)


def samples_from_file(path: str | Path) -> list[Sample]:
    stem = Path(path).stem
    return [record_to_sample(r, f"{stem}:{i}") for i, r in enumerate(read_records(path))]


def files_by_split(data_cfg) -> dict[str, str]:
    """`data.data_files` (split -> file) when given; else `data.path` as the split its file name announces."""
    if given_files(data_cfg):
        return given_files(data_cfg)
    if not data_cfg.path:
        raise ConfigError(f"data.path is not set: point it at your data file (data.source={data_cfg.source}), "
                         "or give data.data_files={train: FILE, test: FILE}")
    split = split_from_filename(Path(data_cfg.path).stem)
    log.info("reading %s as the %r split (from its file name; data.data_files chooses otherwise)",
             data_cfg.path, split)
    return {split: data_cfg.path}


def require_image_root(splits: dict[str, list[Sample]], data_cfg) -> None:
    """Relative image paths need data.image_root: resolving them against the working directory would make a run
    depend on where it was started."""
    if data_cfg.image_root is not None:
        return
    for samples in splits.values():
        for sample in samples:
            for ref in sample.images:
                if isinstance(ref, str) and not Path(ref).is_absolute():
                    raise ConfigError(f"data.image_root is not set, but sample {sample.id!r} refers to the relative "
                                     f"image path {ref!r}; set data.image_root to the folder its images are in")


def load_llava_json(data_cfg) -> dict[str, list[Sample]]:
    splits = {split: samples_from_file(path) for split, path in files_by_split(data_cfg).items()}
    require_image_root(splits, data_cfg)
    return splits

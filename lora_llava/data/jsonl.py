"""A flat table of image-question-answer rows: JSONL (one object per line) or CSV with a header.

Columns are `id` (optional), `image` (a path under data.image_root; empty for a text-only question; in JSONL a list
for several images), `question` and `answer`; `data.columns` renames them, e.g. `data.columns={question: prompt,
image: file}`. Other columns are kept in the sample's meta. The question gets one `<image>` per image in front
unless it already places its own `<image>` tags.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from lora_llava.data.llava_json import (
    as_list,
    existing_file,
    files_by_split,
    read_jsonl,
    read_text,
    require_image_root,
)
from lora_llava.data.samples import IMAGE_PLACEHOLDER, Sample, Turn
from lora_llava.errors import ConfigError, DataError

FIELDS = ("id", "image", "question", "answer")


def column_names(data_cfg, fields=FIELDS) -> dict[str, str]:
    """Our field -> the data's column, after `data.columns`; unknown keys in data.columns are an error."""
    unknown = {f for f, column in data_cfg.columns.items() if column and f not in fields}
    if unknown:
        raise ConfigError(f"data.columns: field(s) {', '.join(sorted(unknown))} mean nothing to "
                         f"data.source={data_cfg.source}; its fields are {', '.join(fields)} (our field -> your column)")
    return {f: data_cfg.columns.get(f) or f for f in fields}


def check_columns(available, names: dict[str, str], where: str) -> None:
    missing = [f"{field} (column {names[field]!r})" for field in ("question", "answer") if names[field] not in available]
    if missing:
        raise DataError(f"{where}: no {' and no '.join(missing)}; the columns are {', '.join(map(str, available))}. "
                         "Map yours with data.columns.question=COLUMN (likewise answer, image, id)")


def flat_sample(row: dict, names: dict[str, str], fallback_id: str, images: list) -> Sample:
    """question/answer row -> a one-exchange Sample; `images` are the row's image references."""
    question, answer = row.get(names["question"]), row.get(names["answer"])
    question = "" if question is None else str(question)
    if images and IMAGE_PLACEHOLDER not in question:
        question = f"{IMAGE_PLACEHOLDER}\n" * len(images) + question
    sample_id = row.get(names["id"])
    sample_id = fallback_id if sample_id in (None, "") else str(sample_id)
    meta = {k: v for k, v in row.items() if k not in names.values()}
    turns = [Turn("user", question), Turn("assistant", "" if answer is None else str(answer))]
    return Sample(sample_id, turns, images, meta)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    path = existing_file(path)
    if path.suffix.lower() == ".csv":
        return list(csv.DictReader(io.StringIO(read_text(path), newline="")))
    return read_jsonl(path)


def samples_from_table(path: str | Path, names: dict[str, str]) -> list[Sample]:
    rows = read_rows(path)
    if rows:
        check_columns(list(dict.fromkeys(k for r in rows if isinstance(r, dict) for k in r)), names, str(path))
    stem, samples = Path(path).stem, []
    for i, row in enumerate(rows):
        row = row if isinstance(row, dict) else {}
        images = [str(ref) for ref in as_list(row.get(names["image"]))]
        samples.append(flat_sample(row, names, f"{stem}:{i + 1}", images))
    if rows and not any(s.images for s in samples):
        check_unmapped_images({k: [r.get(k) for r in rows if isinstance(r, dict)] for k in rows[0]}, names, path)
    return samples


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def looks_like_images(values: list) -> bool:
    """Most non-empty values are image file names."""
    names = [str(v).strip().lower() for v in values if v not in (None, "")]
    return bool(names) and sum(n.endswith(IMAGE_SUFFIXES) for n in names) > len(names) / 2


def check_unmapped_images(columns: dict[str, list], names: dict[str, str], where) -> None:
    """No sample got an image, yet a column holds image file names: the column mapping missed it."""
    for column, values in columns.items():
        if column != names["image"] and looks_like_images(values):
            raise DataError(f"{where}: no sample has an image, but column {column!r} holds image file names "
                            f"(e.g. {next(v for v in values if v)!r}) and data.columns.image is "
                            f"{names['image']!r}: map it with data.columns.image={column}")


def load_jsonl(data_cfg) -> dict[str, list[Sample]]:
    names = column_names(data_cfg)
    splits = {split: samples_from_table(path, names) for split, path in files_by_split(data_cfg).items()}
    require_image_root(splits, data_cfg)
    return splits

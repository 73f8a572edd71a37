"""A team's image annotations, as the text a text-only LLM reads in place of the image (LLaVA's symbolic
representation): captions, then object boxes as `label: [x1, y1, x2, y2]` in fractions of the image size,
then any free text (a report, a label, notes).

Two inputs:
- JSONL or CSV, one image per row: `image` (a path under generate.image_root), and any of `captions` (a list,
  or one string; in CSV several are separated by " | "), `boxes` (a list of {"label", "box": [x1, y1, x2, y2]}
  in pixels or in fractions; in CSV a JSON string), `text`. Other columns are kept with the record.
- COCO: a captions_*.json file and optionally the instances_*.json file of the same images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lora_llava.data.llava_json import as_list, read_jsonl
from lora_llava.errors import DataError


@dataclass
class Note:
    id: str
    image: str  # as given: relative to generate.image_root
    captions: list[str] = field(default_factory=list)
    boxes: list[tuple[str, list[float]]] = field(default_factory=list)  # fractions of width / height
    text: str = ""

    def context(self) -> str:
        lines = list(self.captions)
        lines += [f"{label}: [{', '.join(f'{v:.3f}' for v in box)}]" for label, box in self.boxes]
        if self.text:
            lines += ["", self.text] if lines else [self.text]
        return "\n".join(lines)


def image_size(image_root: str | None, image: str) -> tuple[int, int] | None:
    path = Path(image_root or ".") / image
    if not path.is_file():
        return None
    from PIL import Image

    with Image.open(path) as im:  # reads the header only
        return im.size


def fractions(box: list, size: tuple[int, int] | None, where: str) -> list[float]:
    """[x1, y1, x2, y2] in fractions of the image; pixel boxes need the image's size."""
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise DataError(f"{where}: a box must be [x1, y1, x2, y2], got {box!r}")
    values = [float(v) for v in box]
    if max(values) <= 1.0:
        return values
    if size is None:
        raise DataError(f"{where}: box {box} is in pixels but the image cannot be opened to read its size; "
                        "check generate.image_root, or give boxes in fractions of the image")
    width, height = size
    return [values[0] / width, values[1] / height, values[2] / width, values[3] / height]


def note_from_row(row: dict, where: str, image_root: str | None, csv_row: bool) -> Note:
    if not isinstance(row, dict) or not row.get("image"):
        raise DataError(f"{where}: every row needs an `image` path (got {row!r:.120})")
    captions = row.get("captions", row.get("caption"))
    if csv_row:
        captions = [c.strip() for c in str(captions or "").split(" | ") if c.strip()]
    boxes = row.get("boxes") or []
    if isinstance(boxes, str):
        try:
            boxes = json.loads(boxes)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: boxes is not valid JSON ({err})") from None
    size = image_size(image_root, row["image"]) if boxes else None
    parsed = []
    for box in as_list(boxes):
        if not isinstance(box, dict) or "label" not in box or "box" not in box:
            raise DataError(f"{where}: each box needs `label` and `box` (got {box!r:.120})")
        parsed.append((str(box["label"]), fractions(box["box"], size, where)))
    return Note(str(row.get("id") or Path(row["image"]).stem), str(row["image"]),
                [str(c) for c in as_list(captions)], parsed, str(row.get("text") or ""))


def read_table(path: Path, image_root: str | None) -> list[Note]:
    import csv

    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            return [note_from_row(r, f"{path}, row {i}", image_root, True)
                    for i, r in enumerate(csv.DictReader(f), 2)]
    lines = [n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()]
    return [note_from_row(row, f"{path}, line {n}", image_root, False) for n, row in zip(lines, read_jsonl(path))]


def read_coco(captions_file: Path, instances_file: Path | None) -> list[Note]:
    captions = json.loads(captions_file.read_text(encoding="utf-8"))
    images = {im["id"]: im for im in captions["images"]}
    notes = {i: Note(str(i), im["file_name"]) for i, im in images.items()}
    for ann in captions["annotations"]:
        notes[ann["image_id"]].captions.append(ann["caption"].strip())
    if instances_file:
        instances = json.loads(instances_file.read_text(encoding="utf-8"))
        names = {c["id"]: c["name"] for c in instances["categories"]}
        for ann in instances["annotations"]:
            im = images[ann["image_id"]]
            x, y, w, h = ann["bbox"]  # COCO: pixels, top-left corner and size
            box = [x / im["width"], y / im["height"], (x + w) / im["width"], (y + h) / im["height"]]
            notes[ann["image_id"]].boxes.append((names[ann["category_id"]], box))
    return [notes[i] for i in sorted(notes)]


def existing(path: str | None, key: str) -> Path | None:
    if not path:
        return None
    if not Path(path).is_file():
        raise DataError(f"{key}={path}: no such file")
    return Path(path)


def read_notes(gen_cfg) -> list[Note]:
    """The annotated images of `generate.*`, in file order, the first generate.limit of them."""
    if gen_cfg.coco_captions:
        notes = read_coco(existing(gen_cfg.coco_captions, "generate.coco_captions"),
                          existing(gen_cfg.coco_instances, "generate.coco_instances"))
    else:
        notes = read_table(existing(gen_cfg.annotations, "generate.annotations"), gen_cfg.image_root)
    seen = set()
    for note in notes:
        if note.id in seen:
            raise DataError(f"image id {note.id!r} appears twice in the annotations; ids must be unique")
        seen.add(note.id)
    return notes[: gen_cfg.limit] if gen_cfg.limit else notes

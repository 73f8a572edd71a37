"""Any `datasets` dataset: a Hub id, a local folder of parquet/arrow/JSON/CSV files, a `save_to_disk` folder, or
`data.data_files`. Rows are question/answer (jsonl.py's fields) or, when the data has a `conversations` column,
LLaVA conversations; `data.columns` maps our fields to the dataset's column names.

Image columns are read undecoded and kept as lazily opened images, so a split of thousands of images costs its
encoded size in memory and each image is decoded (and checked) when a batch needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from lora_llava.data.images import open_encoded
from lora_llava.data.jsonl import FIELDS, check_columns, check_unmapped_images, column_names, flat_sample
from lora_llava.data.llava_json import record_to_sample, require_image_root
from lora_llava.data.samples import Sample
from lora_llava.data.splits import canonical, given_files, split_from_filename
from lora_llava.errors import ConfigError

BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def _builder(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in BUILDERS:
        raise ConfigError(f"{path}: cannot tell the file type; use one of {', '.join(BUILDERS)}")
    return BUILDERS[suffix]


def open_dataset(data_cfg) -> dict[str, Any]:
    """split -> datasets.Dataset for `data.path` / `data.data_files` (`data.name` picks a configuration)."""
    from datasets import Dataset, load_dataset, load_from_disk

    path = data_cfg.path
    files = given_files(data_cfg)
    if files:
        loaded = load_dataset(_builder(next(iter(files.values()))), data_files=files)
    elif not path:
        raise ConfigError("data.path is not set: give a Hub dataset id, a local dataset folder or file, "
                         "or data.data_files={train: FILE, test: FILE}")
    elif Path(path).is_dir() and any((Path(path) / f).is_file() for f in ("dataset_dict.json", "state.json")):
        loaded = load_from_disk(path)
    elif Path(path).is_file():
        loaded = load_dataset(_builder(path), data_files={split_from_filename(Path(path).stem): path})
    else:
        loaded = load_dataset(path, name=data_cfg.name)  # a Hub id or a folder of data files
    if isinstance(loaded, Dataset):
        loaded = {"train": loaded}
    return {canonical(name): undecoded(ds) for name, ds in loaded.items()}


def undecoded(ds):
    """The dataset with its image columns (Image, or a list of Image) left as encoded bytes."""
    from datasets import Image as ImageFeature

    for name, feature in ds.features.items():
        if isinstance(feature, ImageFeature):
            ds = ds.cast_column(name, ImageFeature(decode=False))
        elif is_image_feature(feature):
            ds = ds.cast_column(name, type(feature)(ImageFeature(decode=False)))
    return ds


def image_refs(value: Any) -> list:
    """Image references of one cell: nothing, a path, a PIL image, `{"bytes", "path"}`, or a list of these."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [ref for item in value for ref in image_refs(item)]
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            # Empty bytes are kept, so that screening rejects the sample instead of training it text-only.
            return [open_encoded(value["bytes"])]
        return [value["path"]] if value.get("path") else []
    return [value] if isinstance(value, Image.Image) else [str(value)]


def _label_names(ds, column: str):
    """ClassLabel columns hold integers; the answer must be the label's name."""
    feature = ds.features.get(column)
    return feature.int2str if hasattr(feature, "int2str") else None


def rows_to_samples(ds, names: dict[str, str], split: str) -> list[Sample]:
    to_name = _label_names(ds, names["answer"])
    conversations = names["conversations"] in ds.column_names
    if not conversations:
        check_columns(ds.column_names, names, f"dataset {split!r} split")
    samples = []
    for i, row in enumerate(ds):
        images = image_refs(row.get(names["image"]))
        if conversations:
            record = {k: v for k, v in row.items() if k not in (names["image"], names["conversations"], names["id"])}
            record.update(id=row.get(names["id"], f"{split}-{i}"), conversations=row[names["conversations"]])
            sample = record_to_sample(record, f"{split}-{i}")
            sample.images = images
        else:
            if to_name is not None and isinstance(row.get(names["answer"]), int):
                row = {**row, names["answer"]: to_name(row[names["answer"]])}
            sample = flat_sample({k: v for k, v in row.items() if k != names["image"]}, names, f"{split}-{i}",
                                 images)
        samples.append(sample)
    if len(ds) and not any(s.images for s in samples):
        check_unmapped_images(image_columns(ds, 50), names, f"dataset {split!r} split")
    return samples


def image_columns(ds, n: int) -> dict[str, list]:
    """The first `n` values of each column, image-typed columns given as their file names (or 'image.png')."""
    columns = {}
    for name in ds.column_names:
        values = ds[name][:n]
        if is_image_feature(ds.features[name]):
            values = [v[0] if isinstance(v, list) and v else v for v in values]  # a list of images: the first
            values = [((v or {}).get("path") or "image.png") if isinstance(v, dict) else v for v in values]
        columns[name] = values
    return columns


def is_image_feature(feature) -> bool:
    from datasets import Image as ImageFeature

    return isinstance(feature, ImageFeature) or isinstance(getattr(feature, "feature", None), ImageFeature)


def load_hf(data_cfg) -> dict[str, list[Sample]]:
    names = column_names(data_cfg, (*FIELDS, "conversations"))
    splits = {split: rows_to_samples(ds, names, split) for split, ds in open_dataset(data_cfg).items()}
    require_image_root(splits, data_cfg)
    return splits

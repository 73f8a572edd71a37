"""Data sources, each turning its format into lists of `Sample`; `load_splits` picks one by `data.source`."""

from __future__ import annotations

from lora_llava.data.samples import IMAGE_PLACEHOLDER, Sample, SampleError, Turn
from lora_llava.errors import ConfigError, DataError, cannot_load

__all__ = [
    "IMAGE_PLACEHOLDER",
    "SOURCES",
    "Sample",
    "SampleError",
    "Turn",
    "load_splits",
    "require_split",
    "training_splits",
]


def _synthetic(cfg):
    from lora_llava.data.synthetic import load_synthetic

    return load_synthetic(cfg)


def _scienceqa(cfg):
    from lora_llava.data.scienceqa import load_scienceqa

    return load_scienceqa(cfg)


def _llava_json(cfg):
    from lora_llava.data.llava_json import load_llava_json

    return load_llava_json(cfg)


def _jsonl(cfg):
    from lora_llava.data.jsonl import load_jsonl

    return load_jsonl(cfg)


def _hf(cfg):
    from lora_llava.data.hf import load_hf

    return load_hf(cfg)


# source name -> loader(data_cfg) -> {split: [Sample]}. Loaders import their own dependencies lazily.
SOURCES = {"synthetic": _synthetic, "scienceqa": _scienceqa, "llava_json": _llava_json, "jsonl": _jsonl, "hf": _hf}


def load_splits(cfg) -> dict[str, list[Sample]]:
    """{split: samples} with canonical split names, a seeded validation split when the data has none, and
    `<image>` placed per data.image_placement. Bad samples are not removed here: see data/screen.py."""
    from lora_llava.data.placement import place_images
    from lora_llava.data.splits import with_validation

    if cfg.source not in SOURCES:
        raise ConfigError(f"data.source={cfg.source!r} is not one of {', '.join(sorted(SOURCES))}")
    where = f"data.path={cfg.path}" if cfg.path else "data.data_files"
    with cannot_load(DataError, where, "Check the path or Hub id, the network, or HF_HUB_OFFLINE"):
        splits = with_validation(SOURCES[cfg.source](cfg), cfg)
    return {name: place_images(samples, cfg.image_placement) for name, samples in splits.items()}


def training_splits(cfg, answer_suffix: str | None = None,
                    loaded: dict[str, list[Sample]] | None = None) -> dict[str, list[Sample]]:
    """The splits as a training run sees them before screening: the training split cut to data.limit, and
    `answer_suffix` (train.answer_suffix) added to the training and validation samples. `loaded`: load_splits's
    result when the run already has it (left unchanged)."""
    from lora_llava.data.samples import with_suffix

    splits = dict(loaded) if loaded is not None else load_splits(cfg)
    require_split(splits, cfg.train_split, "data.train_split")
    if cfg.limit:
        splits[cfg.train_split] = splits[cfg.train_split][: cfg.limit]
    for name in (cfg.train_split, cfg.eval_split):
        if name in splits and answer_suffix:
            splits[name] = [with_suffix(s, answer_suffix) for s in splits[name]]
    return splits
def require_split(splits: dict[str, list[Sample]], name: str, key: str) -> list[Sample]:
    """The samples of split `name` (named by config `key`); a missing or empty split is an error naming both."""
    from lora_llava.errors import ConfigError, DataError

    if name not in splits:
        raise ConfigError(f"{key}={name!r}: the data has no such split; its splits are {', '.join(splits) or 'none'}")
    if not splits[name]:
        raise DataError(f"{key}={name!r}: the split has no samples (check data.path / data.data_files)")
    return splits[name]

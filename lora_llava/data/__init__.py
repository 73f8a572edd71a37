"""Data sources, each turning its format into lists of `Sample`; `load_splits` picks one by `data.source`."""

from __future__ import annotations

from lora_llava.data.samples import IMAGE_PLACEHOLDER, Sample, SampleError, Turn

__all__ = ["IMAGE_PLACEHOLDER", "Sample", "SampleError", "Turn", "load_splits", "SOURCES"]


def _synthetic(cfg):
    from lora_llava.data.synthetic import load_synthetic

    return load_synthetic(cfg)


# source name -> loader(data_cfg) -> {split: [Sample]}. Loaders import their own dependencies lazily.
SOURCES = {"synthetic": _synthetic}


def load_splits(cfg) -> dict[str, list[Sample]]:
    if cfg.source not in SOURCES:
        raise ValueError(f"data.source={cfg.source!r} is not one of {', '.join(sorted(SOURCES))}")
    return SOURCES[cfg.source](cfg)

"""Split names every source agrees on, and a seeded validation split for data that comes without one."""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import replace

from lora_llava.data.samples import Sample

log = logging.getLogger("lora_llava")

# Names sources use for the validation split (ScienceQA's pid_splits.json says "val"); one name downstream.
ALIASES = {"val": "validation", "valid": "validation", "dev": "validation"}


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


def given_files(data_cfg) -> dict[str, str]:
    """data.data_files without its unset (null) entries: split -> file."""
    return {canonical(split): path for split, path in data_cfg.data_files.items() if path}


def split_from_filename(stem: str, default: str = "train") -> str:
    """The split a file's name announces (`llava_test_CQM-A`, `val.jsonl`, `my_data_train`), else `default`."""
    words = stem.lower().replace("-", "_").split("_")
    for word in words:
        if word in ("train", "test", "validation", *ALIASES):
            return canonical(word)
    return default


def unique_ids(samples: list[Sample], split: str) -> list[Sample]:
    """Samples whose ids are unique within the split: a repeated id becomes `ID#2`, `ID#3`, ... with a warning
    (predictions, rejects and resumes are keyed by id, so two samples must never share one)."""
    counts, renamed, out = Counter(), [], []
    for sample in samples:
        counts[sample.id] += 1
        if counts[sample.id] > 1:
            new_id = f"{sample.id}#{counts[sample.id]}"
            renamed.append(f"{sample.id!r} -> {new_id!r}")
            sample = replace(sample, id=new_id)
        out.append(sample)
    if renamed:
        log.warning("%s split: %d sample(s) repeat an id and were renamed: %s", split, len(renamed),
                    ", ".join(renamed[:5]) + (" ..." if len(renamed) > 5 else ""))
    return out


def carve_validation(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """(train, validation): a seeded random `fraction` of `samples` held out, both keeping the original order."""
    if not 0 < fraction < 1 or len(samples) < 2:
        return samples, []
    n_val = min(len(samples) - 1, max(1, round(len(samples) * fraction)))
    held = set(random.Random(seed).sample(range(len(samples)), n_val))
    train = [s for i, s in enumerate(samples) if i not in held]
    return train, [s for i, s in enumerate(samples) if i in held]


def with_validation(splits: dict[str, list[Sample]], data_cfg) -> dict[str, list[Sample]]:
    """Canonical split names; when `data.eval_split` is missing but the training split exists, a seeded
    `data.val_fraction` of the training samples becomes the validation split."""
    splits = {canonical(name): unique_ids(samples, canonical(name)) for name, samples in splits.items()}
    train_name, eval_name = data_cfg.train_split, data_cfg.eval_split
    if eval_name and eval_name not in splits and train_name in splits:
        train, held_out = carve_validation(splits[train_name], data_cfg.val_fraction, data_cfg.seed)
        if not held_out:
            return splits
        splits[train_name], splits[eval_name] = train, held_out
        log.info("no %r split in the data: held out %d of %d training samples (data.val_fraction=%s, "
                 "data.seed=%d)", eval_name, len(splits[eval_name]),
                 len(splits[eval_name]) + len(splits[train_name]), data_cfg.val_fraction, data_cfg.seed)
    return splits

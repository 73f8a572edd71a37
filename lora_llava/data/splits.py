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


def image_groups(samples: list[Sample]) -> list[int]:
    """Per sample, the index of its group: samples that share an image file (directly or through others) form
    one group, numbered in order of first appearance; a text-only sample or one with in-memory images is a group
    of its own (decoded images cannot be told apart without hashing their pixels)."""
    parent = list(range(len(samples)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, sample in enumerate(samples):
        for image in sample.images:
            if isinstance(image, str):
                j = first.setdefault(image, i)
                a, b = root(i), root(j)
                parent[max(a, b)] = min(a, b)
    numbers: dict[int, int] = {}
    return [numbers.setdefault(root(i), len(numbers)) for i in range(len(samples))]


def carve_validation(samples: list, fraction: float, seed: int,
                     groups: list[int] | None = None) -> tuple[list, list]:
    """(train, validation): a seeded random `fraction` of the groups held out (`groups`: each sample's group, as
    image_groups gives; default: every sample its own), both sides keeping the original order. A group is never
    split, so no validation question asks about an image the model trained on. With one sample per group this is
    the same split as drawing samples."""
    groups = list(range(len(samples))) if groups is None else groups
    n_groups = len(set(groups))
    if not 0 < fraction < 1 or n_groups < 2:
        return samples, []
    n_val = min(n_groups - 1, max(1, round(n_groups * fraction)))
    held = set(random.Random(seed).sample(range(n_groups), n_val))
    train = [s for s, g in zip(samples, groups) if g not in held]
    return train, [s for s, g in zip(samples, groups) if g in held]


def with_validation(splits: dict[str, list[Sample]], data_cfg) -> dict[str, list[Sample]]:
    """Canonical split names; when `data.eval_split` is missing but the training split exists, a seeded
    `data.val_fraction` of the training samples becomes the validation split."""
    splits = {canonical(name): unique_ids(samples, canonical(name)) for name, samples in splits.items()}
    train_name, eval_name = data_cfg.train_split, data_cfg.eval_split
    if eval_name and eval_name not in splits and train_name in splits:
        samples = splits[train_name]
        groups = image_groups(samples)
        train, held_out = carve_validation(samples, data_cfg.val_fraction, data_cfg.seed, groups)
        if not held_out:
            return splits
        splits[train_name], splits[eval_name] = train, held_out
        n_groups = len(set(groups))
        shared = len(samples) - n_groups
        log.info("no %r split in the data: held out %d of %d training samples (data.val_fraction=%s of %d "
                 "groups, data.seed=%d)%s", eval_name, len(held_out), len(samples), data_cfg.val_fraction,
                 n_groups, data_cfg.seed,
                 f"; samples sharing an image stay on one side ({shared} share one with an earlier sample)"
                 if shared else "")
    return splits

"""Screening: every sample is checked before a model sees it, so bad input never slips through or stops a run
hours in. A sample passes when its structure is sound (Sample.check: roles, a non-empty answer, one image per
`<image>`), each image loads (data/images.py: present, inside the image root, decodable, under the bomb limit)
and its token length fits data.max_length with its image tokens expanded (Collator.encode).

`data.on_error=raise` stops at the first bad sample with its id, file and reason. `data.on_error=skip` leaves bad
samples out, prints how many, writes each with its reason to `<run_dir>/rejected.jsonl`, and still stops when
more than `data.max_skip_fraction` of a split is bad (a wrong image_root should not quietly train on nothing).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from lora_llava.data.collate import IGNORE_INDEX, Collator
from lora_llava.data.images import load_image
from lora_llava.data.lengths import Lengths
from lora_llava.data.samples import Sample, SampleError
from lora_llava.errors import DataError

log = logging.getLogger("lora_llava")

REJECTED_FILE = "rejected.jsonl"


class TooManyRejected(DataError):
    """More of a split was rejected than data.max_skip_fraction allows."""


@dataclass
class Screened:
    """The outcome of screening one split: kept samples with their token counts and image sizes, and rejects."""

    split: str
    kept: list[Sample] = field(default_factory=list)
    rejected: list[tuple[Sample, SampleError]] = field(default_factory=list)
    n_tokens: list[int] = field(default_factory=list)  # one per kept sample
    answer_tokens: list[int] = field(default_factory=list)  # supervised tokens, one per kept sample
    image_sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) of every kept image

    @property
    def total(self) -> int:
        return len(self.kept) + len(self.rejected)

    def lengths(self) -> Lengths:
        """The kept rows' exact lengths, for the memory planner (no second tokenization); rejects as refused."""
        return Lengths(tokens=list(self.n_tokens), answer_tokens=list(self.answer_tokens),
                       images=[len(s.images) for s in self.kept],
                       refused={s.id: err.reason for s, err in self.rejected})


def check_sample(sample: Sample, collator: Collator) -> tuple[int, int, list[tuple[int, int]]]:
    """(token count, answer token count, image sizes) of a usable sample; raises SampleError naming the sample,
    file and reason."""
    sample.check()
    sizes = [load_image(sample.id, ref, collator.image_root).size for ref in sample.images]
    # The exact count, image tokens included (anyres families: from each image's size), before any weights load.
    encoded = collator.encode(sample, [(h, w) for w, h in sizes])
    answer = sum(label != IGNORE_INDEX for label in encoded["labels"])
    return len(encoded["input_ids"]), answer, sizes


def screen(samples: list[Sample], data_cfg, processor, split: str, generation: bool = False,
           stop_at_first: bool = False) -> Screened:
    """Check every sample of `split`. Training samples are measured whole; `generation` measures the prompt only
    (what evaluation feeds the model). `stop_at_first` re-raises the first SampleError."""
    collator = Collator(processor, max_length=data_cfg.max_length, system_prompt=data_cfg.system_prompt,
                        image_root=data_cfg.image_root, generation=generation)
    result = Screened(split)
    for sample in tqdm(samples, desc=f"checking {split} samples", unit="sample", leave=False,
                       disable=len(samples) < 500):
        try:
            n_tokens, answer, sizes = check_sample(sample, collator)
        except SampleError as err:
            if stop_at_first:
                raise SampleError(err.sample_id, f"{err.reason} [{split} split; data.on_error=skip leaves bad "
                                                 "samples out and lists them in rejected.jsonl]", err.path) from None
            result.rejected.append((sample, err))
            continue
        result.kept.append(sample)
        result.n_tokens.append(n_tokens)
        result.answer_tokens.append(answer)
        result.image_sizes += sizes
    return result


def reason_kind(reason: str) -> str:
    """A reason with its particulars (numbers, quoted names, parenthesised details) removed, for grouping."""
    kind = re.sub(r"'[^']*'|\"[^\"]*\"", "…", reason.split(" (")[0].split(" [")[0])
    return re.sub(r"(?<![\w/.-])\d+(?![\w/.-])", "N", kind)  # counts, not digits inside paths


def write_rejected(run_dir: Path, screened: Screened, name: str = REJECTED_FILE) -> Path:
    """Append one line per rejected sample (split, id, path, reason) to <run_dir>/<name>."""
    path = Path(run_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for sample, err in screened.rejected:
            row = {"split": screened.split, "id": sample.id, "path": err.path, "reason": err.reason}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def apply_skip_policy(screened: Screened, data_cfg, run_dir: Path) -> list[Sample]:
    """The kept samples, after reporting the rejects; raises TooManyRejected past data.max_skip_fraction."""
    if not screened.rejected:
        return screened.kept
    path = write_rejected(run_dir, screened)
    n, total = len(screened.rejected), screened.total
    kinds = Counter(reason_kind(err.reason) for _, err in screened.rejected).most_common(3)
    print(f"data: skipped {n} of {total} {screened.split} samples (data.on_error=skip); each with its reason in "
          f"{path}. Most common: " + "; ".join(f"{k} ({c})" for k, c in kinds))
    if n / total > data_cfg.max_skip_fraction:
        raise TooManyRejected(
            f"{n} of {total} {screened.split} samples ({n / total:.1%}) were rejected, more than "
            f"data.max_skip_fraction={data_cfg.max_skip_fraction}. See {path} for each sample and reason; fix the "
            "data (or data.image_root / data.max_length), or raise data.max_skip_fraction if this is expected.")
    return screened.kept


def screen_split(samples: list[Sample], data_cfg, processor, run_dir: Path, split: str,
                 generation: bool = False) -> list[Sample]:
    """The samples of `split` a run may use, per data.on_error (see the module docstring)."""
    return screen_and_keep(samples, data_cfg, processor, run_dir, split, generation).kept


def screen_and_keep(samples: list[Sample], data_cfg, processor, run_dir: Path, split: str,
                    generation: bool = False) -> Screened:
    """screen_split's outcome whole: the kept samples with their lengths (after the skip policy)."""
    screened = screen(samples, data_cfg, processor, split, generation, stop_at_first=data_cfg.on_error == "raise")
    apply_skip_policy(screened, data_cfg, run_dir)
    return screened


def screen_splits(splits: dict[str, list[Sample]], data_cfg, processor, run_dir: Path,
                  names: list[str | None]) -> tuple[dict[str, list[Sample]], dict[str, Lengths]]:
    """`splits` with the named ones (those present) screened as training data, and the screened splits'
    lengths (what the memory planner sizes from)."""
    out, lengths = dict(splits), {}
    for name in dict.fromkeys(n for n in names if n and n in splits):
        screened = screen_and_keep(splits[name], data_cfg, processor, run_dir, name)
        out[name], lengths[name] = screened.kept, screened.lengths()
    return out, lengths

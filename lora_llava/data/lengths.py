"""Token lengths of a split as the collator builds its rows (image tokens expanded, the answer supervised), for the
memory planner: activations grow with the widest micro-batch, and what bounds it is the data, not data.max_length.

Only the text is tokenized (no image is decoded; anyres families read each image's size), so measuring
ScienceQA's 12,726 training questions takes seconds. A training run does not call this: screening has already
encoded every row, and its counts are used (data/screen.py, Screened.lengths). A sample the collator refuses (longer than data.max_length, no answer) is counted, not measured: the
run's screening rejects or stops at it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from lora_llava.data.collate import IGNORE_INDEX, Collator
from lora_llava.data.samples import Sample, SampleError


def spread(values: list[int]) -> dict:
    """min / median / p95 / max (p95: the value at 95% of the sorted list), or {} for no values."""
    if not values:
        return {}
    ordered = sorted(values)
    return {"min": ordered[0], "median": int(statistics.median(ordered)),
            "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], "max": ordered[-1]}


@dataclass
class Lengths:
    """Per measured sample: tokens in its row, supervised (answer) tokens, images."""

    tokens: list[int] = field(default_factory=list)
    answer_tokens: list[int] = field(default_factory=list)
    images: list[int] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # sample id -> reason, for samples not measured

    def longest_batch(self, batch_size: int) -> dict:
        """The widest micro-batch any epoch can draw: `batch_size` rows padded to the longest row. This holds for
        random and modality-grouped batches alike (grouping changes which rows pad, not that the longest row's
        batch is padded to it); the grouped sampler puts that batch first, so memory fails at step 1 if at all.
        Answer tokens and images per row are taken at their maxima, an upper bound."""
        if not self.tokens:
            return {"rows": 0, "width": 0, "answer_tokens": 0, "images_per_row": 0}
        return {"rows": min(batch_size, len(self.tokens)), "width": max(self.tokens),
                "answer_tokens": max(self.answer_tokens), "images_per_row": max(self.images)}

    def summary(self) -> dict:
        image_rows = [t for t, n in zip(self.tokens, self.images) if n]
        text_rows = [t for t, n in zip(self.tokens, self.images) if not n]
        return {"samples": len(self.tokens), "with_image": len(image_rows), "refused": len(self.refused),
                "tokens": spread(self.tokens), "tokens_image_rows": spread(image_rows),
                "tokens_text_rows": spread(text_rows), "answer_tokens": spread(self.answer_tokens)}


def measure(samples: list[Sample], processor, data_cfg) -> Lengths:
    """Lengths of `samples` as the training collator encodes them (data.max_length and data.system_prompt)."""
    # image_root: anyres families count an image's tokens from its size, read from the file's header.
    collator = Collator(processor, max_length=data_cfg.max_length, system_prompt=data_cfg.system_prompt,
                        image_root=data_cfg.image_root)
    out = Lengths()
    for sample in tqdm(samples, desc="measuring token lengths", unit="sample", leave=False,
                       disable=len(samples) < 500):
        try:
            encoded = collator.encode(sample)
        except SampleError as err:
            out.refused[sample.id] = err.reason
            continue
        out.tokens.append(len(encoded["input_ids"]))
        out.answer_tokens.append(sum(label != IGNORE_INDEX for label in encoded["labels"]))
        out.images.append(len(sample.images))
    return out

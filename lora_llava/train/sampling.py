"""Modality- and length-grouped batching (LLaVA's `group_by_modality_length`).

An image sample carries hundreds of image tokens (576 for LLaVA-1.5); a text-only ScienceQA question is a few dozen tokens. Batched at random,
a text-only row is padded to the width of the image row beside it, and the model computes on padding. Here every
micro-batch holds one modality (on ScienceQA's test questions, batch 8: 51% padding -> 21%). Optionally, samples
are also sorted by length within windows of `window` micro-batches (window 50, transformers' choice: -> 1%), but
that makes each batch alike in content too (short questions with short questions: on the smoke data, one
question type per batch), which cost the smoke recipe its held-out accuracy (1.0 -> 0.80); so the default window
is 1, LLaVA's own choice, where only the modality is grouped. A fresh permutation every epoch; batches shuffled.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Sampler

from lora_llava.data.samples import IMAGE_PLACEHOLDER


def sample_lengths(samples, collator) -> list[int]:
    """Token count of each sample: its text rendered by the collator's model family and tokenized in one batched
    call, plus each image's token count (anyres families: from the image's size). Close to the collator's exact
    length (placeholders can shift a neighbouring merge); grouping needs no more."""
    family, processor, tokenizer = collator.family, collator.processor, collator.tokenizer
    texts = [family.render(processor, s.turns, collator.system_prompt)[0].replace(IMAGE_PLACEHOLDER, "")
             for s in samples]
    ids = tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else []
    return [len(t) + sum(collator.image_token_counts(s)) for t, s in zip(ids, samples)]


def _sorted_batches(indices: list[int], lengths: Sequence[int], batch_size: int, window: int) -> list[list[int]]:
    """Cut into micro-batches, each window of `window` batches sorted by length (longest first) beforehand."""
    mega = batch_size * window
    batches = []
    for start in range(0, len(indices), mega):
        chunk = sorted(indices[start:start + mega], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return batches


def grouped_batches(lengths: Sequence[int], has_image: Sequence[bool], batch_size: int,
                    generator: torch.Generator | None = None, window: int = 1) -> list[list[int]]:
    """Every index exactly once, in micro-batches of `batch_size` that hold one modality each, except at most one
    batch made of the two modalities' leftovers. The batch with the longest sample comes first, so a run that does
    not fit in memory fails at its first step rather than hours in; the leftover batch comes last."""
    if len(lengths) != len(has_image):
        raise ValueError(f"{len(lengths)} lengths but {len(has_image)} modality flags")
    full, rest = [], []
    for modality in (True, False):
        members = [i for i, flag in enumerate(has_image) if bool(flag) == modality]
        order = torch.randperm(len(members), generator=generator).tolist()
        batches = _sorted_batches([members[j] for j in order], lengths, batch_size, window)
        # Only a modality's last batch can be short; the short ones are merged at the end.
        short = [b for b in batches if len(b) < batch_size]
        full += [b for b in batches if len(b) == batch_size]
        rest += [i for b in short for i in b]
    full = [full[j] for j in torch.randperm(len(full), generator=generator).tolist()]
    if full:
        longest = max(range(len(full)), key=lambda j: max(lengths[i] for i in full[j]))
        full[0], full[longest] = full[longest], full[0]
    rest_batches = [rest[i:i + batch_size] for i in range(0, len(rest), batch_size)]
    return full + rest_batches


def padding_fraction(lengths: Sequence[int], batches: list[list[int]]) -> float:
    """Share of the computed positions that are padding when each batch is padded to its longest member."""
    computed = sum(max(lengths[i] for i in b) * len(b) for b in batches if b)
    real = sum(lengths[i] for b in batches for i in b)
    return 1.0 - real / computed if computed else 0.0


def random_batches(n: int, batch_size: int, generator: torch.Generator | None = None) -> list[list[int]]:
    """Plain shuffled batching, the baseline grouping is compared against."""
    order = torch.randperm(n, generator=generator).tolist()
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


class ModalityLengthGroupedSampler(Sampler):
    """Yields indices whose consecutive runs of `batch_size` are the grouped micro-batches. The order depends only
    on `seed` and the epoch (the Trainer calls `set_epoch`), so every rank of a distributed run draws the same
    order, and a resumed run replays the epoch it stopped in."""

    def __init__(self, lengths: Sequence[int], has_image: Sequence[bool], batch_size: int, seed: int = 0,
                 window: int = 1):
        self.lengths, self.has_image = list(lengths), list(has_image)
        self.batch_size, self.seed, self.window = batch_size, seed, window
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        batches = grouped_batches(self.lengths, self.has_image, self.batch_size, generator, self.window)
        return iter([i for batch in batches for i in batch])

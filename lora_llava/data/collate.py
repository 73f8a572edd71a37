"""Samples -> model batches. Labels come from character spans of the rendered conversation, so only the
assistant's answers (and their end-of-turn token) are supervised; prompt, image and padding positions are -100.

Each image placeholder is expanded to the exact number of tokens that image becomes, as the model's family
computes it from the image's size (models/: one count for LLaVA-1.5, per size for anyres families), before
tokenizing; so the token sequence is the one the processor would produce, the length check sees the real
length, and the model's image features always match its image tokens. A sample longer than `max_length` is an
error (SampleError), never truncated: cutting through image tokens breaks LLaVA. The conversation is rendered
by the family (its chat format, or the processor's chat template).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lora_llava.data.images import load_image
from lora_llava.data.samples import IMAGE_PLACEHOLDER, Sample, SampleError, Turn
from lora_llava.models.families import family_for_processor

IGNORE_INDEX = -100
SAMPLE_IDS = "sample_ids"  # batch key with the ids of its samples, for error messages; never reaches the model
ANSWER_POSITIONS = "answer_positions"  # batch key: (batch, k) positions whose next token is a label (the loss pops it)


def supervised_positions(labels: torch.Tensor) -> torch.Tensor:
    """Boolean (batch, seq) mask of the positions whose logits predict a label (the label is one step ahead)."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """(batch, k) indices of each row's supervised positions, k the most in any row; shorter rows are padded with
    the last column, which never predicts a label. Built on the CPU so that the device need not count them."""
    keep = supervised_positions(labels)
    k = max(int(keep.sum(1).max()), 1) if keep.numel() else 1
    last = labels.shape[1] - 1
    # Supervised columns first (stable), then the rest replaced by the last column.
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :k]
    return torch.where(keep.gather(1, order), order, torch.full_like(order, last))


def image_token_count(processor) -> int:
    """Tokens one image occupies with a family whose images are one fixed-size view (576 for LLaVA-1.5 at
    336 px). Anyres families count per image size: Collator.image_token_counts."""
    return family_for_processor(processor).image_token_counts(processor, [None])[0]


def merge_image_inputs(per_sample: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One batch from per-sample image inputs: concatenated along images; anyres pixel tensors (images, tiles,
    C, H, W) are zero-padded to the most tiles first, as the processor pads (the model cuts the padding off
    using image_sizes)."""
    out = {}
    for key in per_sample[0]:
        values = [inputs[key] for inputs in per_sample]
        width = max(v.shape[1] for v in values) if values[0].dim() == 5 else None
        if width is not None:
            values = [torch.nn.functional.pad(v, (0, 0, 0, 0, 0, 0, 0, width - v.shape[1])) for v in values]
        out[key] = torch.cat(values)
    return out


def expand_images(turns: list[Turn], image_token: str, counts: list[int]) -> list[Turn]:
    """Turns with the n-th image placeholder replaced by counts[n] image tokens."""
    remaining = iter(counts)
    out = []
    for turn in turns:
        pieces = turn.text.split(IMAGE_PLACEHOLDER)
        text = pieces[0] + "".join(image_token * next(remaining) + piece for piece in pieces[1:])
        out.append(Turn(turn.role, text))
    return out


@dataclass
class Collator:
    processor: Any
    max_length: int | None = None
    system_prompt: str | None = None
    image_root: str | Path | None = None
    generation: bool = False  # True: prompts only, left padding, no labels
    samples: list[Sample] | None = None  # rows of {"sample_index": i} are looked up here
    image_cache: Any = None  # a PixelCache (data/image_cache.py): image files preprocessed once, read back later
    with_ids: bool = False  # add batch[SAMPLE_IDS] (the trainer pops it before the forward pass)
    with_answer_positions: bool = False  # add batch[ANSWER_POSITIONS] (for train.supervised_logits_only)
    padding_free: bool = False  # training batches as one packed row (train.padding_free)
    _fixed_count: int | None = field(init=False, default=None)

    def __post_init__(self):
        self.tokenizer = self.processor.tokenizer
        self.family = family_for_processor(self.processor)
        self._image_token = self.processor.image_token
        if not self.family.needs_image_sizes():
            self._fixed_count = self.family.image_token_counts(self.processor, [None])[0]

    def image_token_counts(self, sample: Sample, sizes: list | None = None) -> list[int]:
        """Tokens each image of `sample` becomes; `sizes` ((height, width) per image) saves loading them."""
        if self._fixed_count is not None or not sample.images:
            return [self._fixed_count] * len(sample.images)
        if sizes is None:
            sizes = [load_image(sample.id, ref, self.image_root).size[::-1] for ref in sample.images]
        return self.family.image_token_counts(self.processor, [tuple(s) for s in sizes])

    def encode(self, sample: Sample, image_sizes: list | None = None) -> dict:
        """Token ids and labels for one sample; checks structure and length."""
        if not self.generation:
            sample.check()
        turns = sample.prompt_turns() if self.generation else sample.turns
        expanded = expand_images(turns, self._image_token, self.image_token_counts(sample, image_sizes))
        text, spans = self.family.render(self.processor, expanded, self.system_prompt, self.generation)
        enc = self.tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
        ids = enc["input_ids"]
        if self.max_length is not None and len(ids) > self.max_length:
            raise SampleError(sample.id, f"{len(ids)} tokens exceed data.max_length={self.max_length} "
                                         "(samples are never truncated through their image tokens)")
        # Vectorized over the ~1000 tokens of an image row (a Python loop here was a tenth of the data path).
        offsets = torch.tensor(enc["offset_mapping"], dtype=torch.long).view(-1, 2)
        answer = torch.zeros(len(ids), dtype=torch.bool)
        for start, end in spans:
            answer |= (offsets[:, 0] >= start) & (offsets[:, 1] <= end)
        answer &= offsets[:, 1] > offsets[:, 0]
        labels = torch.where(answer, torch.tensor(ids), IGNORE_INDEX).tolist()
        if not self.generation and not answer.any():
            raise SampleError(sample.id, "no answer token survives tokenization")
        return {"input_ids": ids, "labels": labels}

    def _process(self, images) -> dict[str, torch.Tensor]:
        return self.family.process_images(self.processor.image_processor, images)

    def sample_image_inputs(self, sample: Sample) -> dict[str, torch.Tensor] | None:
        """What the image processor makes of one sample's images (through the pixel cache when there is one)."""
        if not sample.images:
            return None
        if self.image_cache is not None:
            return self.image_cache.image_inputs(sample.id, sample.images, self.image_root, self._process)
        return self._process([load_image(sample.id, ref, self.image_root) for ref in sample.images])

    def image_inputs(self, samples: list[Sample]) -> list[dict[str, torch.Tensor] | None]:
        return [self.sample_image_inputs(s) for s in samples]

    def __call__(self, items: list) -> dict[str, torch.Tensor]:
        samples = [item if isinstance(item, Sample) else self.samples[item["sample_index"]] for item in items]
        images = self.image_inputs(samples)
        encoded = [self.encode(s, None if i is None or "image_sizes" not in i else i["image_sizes"].tolist())
                   for s, i in zip(samples, images)]
        if self.padding_free and not self.generation:
            batch = self.packed(encoded)
        else:
            batch = self.padded(encoded)
        present = [i for i in images if i is not None]
        if present:
            batch.update(merge_image_inputs(present))
        if self.with_ids:
            batch[SAMPLE_IDS] = [s.id for s in samples]
        if self.with_answer_positions and not self.generation:
            batch[ANSWER_POSITIONS] = answer_positions(batch["labels"])
        return batch

    def padded(self, encoded: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(e["input_ids"]) for e in encoded)
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
        labels = torch.full((len(encoded), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, e in enumerate(encoded):
            n = len(e["input_ids"])
            cols = slice(width - n, width) if self.generation else slice(0, n)
            input_ids[row, cols] = torch.tensor(e["input_ids"])
            labels[row, cols] = torch.tensor(e["labels"])
            attention[row, cols] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention}
        if not self.generation:
            batch["labels"] = labels
        return batch

    @staticmethod
    def packed(encoded: list[dict]) -> dict[str, torch.Tensor]:
        """Padding-free: the rows end to end in one row, positions restarting at 0 for each and no attention
        mask, from which transformers derives the sequence boundaries (flash-attention's cu_seqlens). A row's
        first token is never a label, so no loss crosses a boundary."""
        return {"input_ids": torch.tensor([[t for e in encoded for t in e["input_ids"]]]),
                "labels": torch.tensor([[t for e in encoded for t in e["labels"]]]),
                "position_ids": torch.cat([torch.arange(len(e["input_ids"])) for e in encoded])[None]}

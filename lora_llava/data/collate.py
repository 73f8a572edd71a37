"""Samples -> model batches. Labels come from character spans of the rendered conversation, so only the
assistant's answers (and their EOS) are supervised; prompt, image and padding positions are -100.

Image placeholders are expanded to the processor's exact image-token count before tokenizing, so the token
sequence is the one LlavaProcessor would produce and the length check sees the real length. A sample longer
than `max_length` is an error (SampleError), never truncated: cutting through image tokens breaks LLaVA.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lora_llava.data.chat import render
from lora_llava.data.images import load_image
from lora_llava.data.samples import IMAGE_PLACEHOLDER, Sample, SampleError

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
    """Tokens one image occupies in the sequence (576 for LLaVA-1.5 at 336 px)."""
    size = processor.image_processor.crop_size
    return processor._get_num_multimodal_tokens(image_sizes=[(size["height"], size["width"])]).num_image_tokens[0]


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
    _n_image_tokens: int = field(init=False, default=0)

    def __post_init__(self):
        self.tokenizer = self.processor.tokenizer
        self._n_image_tokens = image_token_count(self.processor)
        self._image_token = self.processor.image_token

    def encode(self, sample: Sample) -> dict:
        """Token ids and labels for one sample; checks structure and length."""
        if not self.generation:
            sample.check()
        turns = sample.prompt_turns() if self.generation else sample.turns
        expanded = [type(t)(t.role, t.text.replace(IMAGE_PLACEHOLDER, self._image_token * self._n_image_tokens))
                    for t in turns]
        text, spans = render(expanded, self.tokenizer.eos_token, self.system_prompt, self.generation)
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

    def pixel_values(self, samples: list[Sample]):
        if self.image_cache is not None and any(s.images for s in samples):
            return self.image_cache.pixel_values([(s.id, ref) for s in samples for ref in s.images], self.image_root)
        images = [load_image(s.id, ref, self.image_root) for s in samples for ref in s.images]
        if not images:
            return None
        return self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def __call__(self, items: list) -> dict[str, torch.Tensor]:
        samples = [item if isinstance(item, Sample) else self.samples[item["sample_index"]] for item in items]
        encoded = [self.encode(s) for s in samples]
        if self.padding_free and not self.generation:
            batch = self.packed(encoded)
        else:
            batch = self.padded(encoded)
        pixels = self.pixel_values(samples)
        if pixels is not None:
            batch["pixel_values"] = pixels
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

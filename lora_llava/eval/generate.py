"""Batched greedy generation: left-padded batches of similar prompt length, answers equal to batch size 1."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from lora_llava.data.collate import Collator
from lora_llava.data.samples import Sample


def length_order(samples: list[Sample]) -> list[int]:
    """Indices sorted so that a batch holds prompts of similar length: image prompts (hundreds of image
    tokens) together, text-only ones together. Cuts padding; the answers do not depend on it."""
    return sorted(range(len(samples)),
                  key=lambda i: (len(samples[i].images), sum(len(t.text) for t in samples[i].prompt_turns())))


@torch.no_grad()
def generate(model, processor, samples: list[Sample], batch_size: int = 8, max_new_tokens: int = 16,
             system_prompt: str | None = None, image_root=None, desc: str = "generating",
             group_by_length: bool = True) -> list[str]:
    """Greedy answers in the order of `samples`, from left-padded batches; identical to batch size 1 (generate
    derives position ids from the attention mask, so padding shifts nothing)."""
    collator = Collator(processor, system_prompt=system_prompt, image_root=image_root, generation=True)
    tokenizer = processor.tokenizer
    device = next(model.parameters()).device
    model.eval()
    order = length_order(samples) if group_by_length else list(range(len(samples)))
    outputs: list[str] = [""] * len(samples)
    with tqdm(total=len(samples), desc=desc, unit="question", leave=False) as bar:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collator([samples[i] for i in rows]).items()}
            if "pixel_values" in batch:
                batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
            out = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            for i, text in zip(rows, texts):
                outputs[i] = text.strip()
            bar.update(len(rows))
    return outputs

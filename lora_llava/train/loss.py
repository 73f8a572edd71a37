"""The causal-LM loss with logits only where a label needs them.

A LLaVA-1.5 training row is ~600-1000 positions (576 of them image tokens) of which a handful are supervised (the
answer and its EOS). The model's own loss projects every position through the 32k-word `lm_head` and keeps the
(batch, seq, vocab) logits for backward; here only the positions whose *next* token is a label are projected,
through transformers' `logits_to_keep` with a (batch, k) position index, so the model's forward (and DDP, PEFT
and checkpointing around it) is used unchanged. The result equals the full-logits loss (tests/unit/test_loss.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lora_llava.data.collate import ANSWER_POSITIONS, IGNORE_INDEX, answer_positions, supervised_positions

__all__ = ["supervised_logits", "supervised_positions", "token_loss", "token_metrics"]


def supervised_logits(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits of the supervised positions (n, vocab), their target ids (n,)) from one forward of `model`.

    The positions come as a (batch, k) index from the collator (`ANSWER_POSITIONS`, built on the CPU), so the
    device never has to report how many there are: a boolean mask would make every step wait for the GPU. Rows
    with fewer than k answer tokens repeat their last position, whose target is IGNORE_INDEX (-100)."""
    labels = inputs["labels"]
    positions = inputs.get(ANSWER_POSITIONS)
    if positions is None:
        positions = answer_positions(labels.cpu()).to(labels.device)  # callers without our collator
    model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", ANSWER_POSITIONS)}
    outputs = model(**model_inputs, use_cache=False, logits_to_keep=positions)
    shifted = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # the label each position predicts
    return outputs.logits.flatten(0, 1), shifted.gather(1, positions).flatten()


def token_loss(logits: torch.Tensor, targets: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Summed cross-entropy (in fp32, as transformers' loss) over `num_items_in_batch` (the supervised tokens of the
    whole accumulated step, so gradient accumulation weighs tokens, not micro-batches) or over this batch's count.
    Targets of IGNORE_INDEX (padding of the position index) count for nothing."""
    total = F.cross_entropy(logits.float(), targets, reduction="sum", ignore_index=IGNORE_INDEX)
    count = num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE_INDEX).sum()
    return total / torch.as_tensor(count, device=total.device).clamp(min=1)


@torch.no_grad()
def token_metrics(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(entropy sum, correct top-1 count, token count) over the supervised targets: what TRL logs as entropy and
    mean_token_accuracy. Device tensors; nothing is read back here."""
    valid = targets != IGNORE_INDEX
    logp = torch.log_softmax(logits.float(), dim=-1)
    entropy = (-(logp.exp() * logp).sum(-1) * valid).sum()
    correct = ((logits.argmax(-1) == targets) & valid).sum()
    return entropy, correct, valid.sum()

"""The causal-LM loss with logits only where a label needs them.

A LLaVA-1.5 training row is ~600-1000 positions (576 of them image tokens) of which a handful are supervised (the
answer and its EOS). The model's own loss projects every position through the 32k-word `lm_head` and keeps the
(batch, seq, vocab) logits for backward; here only the positions whose *next* token is a label are projected,
through transformers' `logits_to_keep` with a boolean mask, so the model's forward (and DDP, PEFT and
checkpointing around it) is used unchanged. The result equals the full-logits loss (tests/unit/test_loss.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def supervised_positions(labels: torch.Tensor) -> torch.Tensor:
    """Boolean (batch, seq) mask of the positions whose logits predict a label (the label is one step ahead)."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


def supervised_logits(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits of the supervised positions (n, vocab), their target ids (n,)) from one forward of `model`."""
    labels = inputs["labels"]
    keep = supervised_positions(labels)
    model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    outputs = model(**model_inputs, use_cache=False, logits_to_keep=keep)
    return outputs.logits, labels[:, 1:][keep[:, :-1]]


def token_loss(logits: torch.Tensor, targets: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Summed cross-entropy (in fp32, as transformers' loss) over `num_items_in_batch` (the supervised tokens of the
    whole accumulated step, so gradient accumulation weighs tokens, not micro-batches) or over this batch's count."""
    total = F.cross_entropy(logits.float(), targets, reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else targets.numel()
    return total / torch.as_tensor(count, device=total.device).clamp(min=1)


@torch.no_grad()
def token_metrics(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(entropy sum, correct top-1 count, token count): what TRL logs as entropy and mean_token_accuracy."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    entropy = -(logp.exp() * logp).sum(-1).sum()
    correct = (logits.argmax(-1) == targets).sum()
    return entropy, correct, torch.tensor(targets.numel(), device=logits.device)

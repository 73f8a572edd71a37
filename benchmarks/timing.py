"""Per-step timing of a transformers Trainer: wall time per optimizer step, the part spent in forward+backward
(`training_step`) and in the optimizer, and the real and padded tokens of each batch. What is left of a step
(data loading and collation, logging, scheduler) is the share "outside forward/backward/optimizer"."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from transformers import TrainerCallback


@dataclass
class StepLog:
    step_s: list[float] = field(default_factory=list)
    fwd_bwd_s: list[float] = field(default_factory=list)
    optimizer_s: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # attended (real) tokens per micro-batch
    positions: list[int] = field(default_factory=list)  # batch x width per micro-batch
    peak_bytes: int = 0


class _Clock(TrainerCallback):
    def __init__(self, log: StepLog, sync):
        self.log, self.sync, self.last, self.opt_start = log, sync, None, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.sync()
        self.last = time.perf_counter()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.sync()
        self.opt_start = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.sync()
        self.log.optimizer_s.append(time.perf_counter() - self.opt_start)

    def on_step_end(self, args, state, control, **kwargs):
        self.sync()
        now = time.perf_counter()
        self.log.step_s.append(now - self.last)
        self.last = now


def instrument(trainer, sync=lambda: None) -> StepLog:
    """Attach the clock to `trainer` (one micro-batch per step assumed: gradient_accumulation_steps=1)."""
    log = StepLog()
    inner = trainer.training_step

    def timed_step(model, inputs, num_items_in_batch=None):
        log.tokens.append(int(inputs["attention_mask"].sum()))
        log.positions.append(inputs["attention_mask"].numel())
        sync()
        start = time.perf_counter()
        loss = inner(model, inputs, num_items_in_batch)
        sync()
        log.fwd_bwd_s.append(time.perf_counter() - start)
        return loss

    trainer.training_step = timed_step
    trainer.add_callback(_Clock(log, sync))
    return log


def summarize(log: StepLog, warmup: int) -> dict:
    """Medians over the steps after `warmup`, and totals for the token figures."""
    steps = slice(warmup, None)
    step, inner, opt = log.step_s[steps], log.fwd_bwd_s[steps], log.optimizer_s[steps]
    tokens, positions = log.tokens[steps], log.positions[steps]
    outside = [max(s - f - o, 0.0) for s, f, o in zip(step, inner, opt)]
    return {
        "median_step_s": statistics.median(step),
        "median_fwd_bwd_s": statistics.median(inner),
        "median_optimizer_s": statistics.median(opt),
        "tokens_per_step": statistics.mean(tokens),
        "positions_per_step": statistics.mean(positions),
        "padding_fraction": 1 - sum(tokens) / sum(positions),
        "tokens_per_s": sum(tokens) / sum(step),
        "outside_share": sum(outside) / sum(step),
        "steps_timed": len(step),
    }

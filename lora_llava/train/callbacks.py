"""What makes a long run cheap to lose: preemption that ends in a checkpoint, a log and a loss plot people can
read, and checks that stop a run which cannot learn (nothing supervised) or has diverged (a non-finite loss or
gradient), naming the step, the samples and the checkpoint to go back to.

Everything here writes on rank 0 only; every process runs the same checks.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

from transformers import TrainerCallback

from lora_llava.distributed import any_process
from lora_llava.errors import ConfigError, DataError, UserError
from lora_llava.train.checkpoints import last_good

log = logging.getLogger("lora_llava")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "trackio": ("trackio",)}


class Preemption(TrainerCallback):
    """SIGTERM / SIGINT: finish the current step, save a checkpoint, stop. A second signal exits at once."""

    def __init__(self):
        self.signum: int | None = None

    @contextmanager
    def installed(self):
        """Our handlers while training runs; the previous ones afterwards (Python only allows this on the main
        thread, so elsewhere a signal keeps its default meaning)."""
        if threading.current_thread() is not threading.main_thread():
            log.warning("training outside the main thread: SIGTERM/SIGINT will not save a checkpoint first")
            yield self
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.signum is not None:
            sys.stderr.write(f"\nlora_llava: second {name}: exiting now, without a checkpoint\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        self.signum = signum
        sys.stderr.write(f"\nlora_llava: {name} received: saving a checkpoint at the end of this step, then "
                         f"stopping (send it again to exit at once)\n")

    def on_step_end(self, args, state, control, **kwargs):
        # Processes must stop at the same step: a signal may reach them at different moments.
        if any_process(self.signum is not None, args.device):
            self.signum = self.signum or signal.SIGTERM
            control.should_save = True
            control.should_training_stop = True
        return control

    def exit(self, checkpoints_dir: Path, step: int, resume_command: str | None):
        """After Trainer.train returned because of a signal: say how to resume, exit 128+signal (143 for TERM).
        `resume_command` is None on ranks other than 0, which exit quietly."""
        name = signal.Signals(self.signum).name
        if resume_command:
            message = (f"lora_llava: stopped by {name} after step {step}; last checkpoint: "
                       f"{last_good(checkpoints_dir)}. To continue, add `train.resume=auto hydra.run.dir=...` to the "
                       f"command that started this run (keep any launcher in front of it):\n  {resume_command}")
            log.warning(message)
        raise SystemExit(128 + self.signum)


class TrainLog(TrainerCallback):
    """logs/train_log.jsonl (a line per logged step, appended across resumes) and logs/loss.png (train and eval
    loss, redrawn at each checkpoint and at the end). `seen` is the trainer's set of (epoch, sample id) this
    process trained on; at the end the processes compare theirs: within an epoch each reads its own shard."""

    def __init__(self, logs_dir: Path, seen: set | None = None):
        self.logs_dir = Path(logs_dir)
        self.seen = seen if seen is not None else set()

    def write(self, record: dict) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        with open(self.logs_dir / "train_log.jsonl", "a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def on_train_begin(self, args, state, control, **kwargs):
        batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        info = {"world_size": args.world_size, "per_device_batch_size": args.per_device_train_batch_size,
                "gradient_accumulation_steps": args.gradient_accumulation_steps, "global_batch_size": batch,
                "max_steps": state.max_steps, "start_step": state.global_step}
        if state.is_world_process_zero:
            log.info("training: world size %d, %d samples per optimizer step, steps %d -> %d",
                     args.world_size, batch, state.global_step, state.max_steps)
            self.write({"event": "start", **info})

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.write({"step": state.global_step, "epoch": state.epoch, **logs})

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            plot_losses(state.log_history, self.logs_dir / "loss.png")

    def on_train_end(self, args, state, control, **kwargs):
        shards = gather_shards(self.seen)
        if state.is_world_process_zero:
            plot_losses(state.log_history, self.logs_dir / "loss.png")
            if len(shards) > 1:
                overlap = len(set.intersection(*shards))  # the same sample in the same epoch on every rank
                sizes = [len(s) for s in shards]
                log.info("(epoch, sample) pairs trained on, by rank: %s; on every rank: %d", sizes, overlap)
                self.write({"event": "data_shards", "samples_by_rank": sizes, "overlap": overlap})


def gather_shards(seen: set) -> list[set]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [seen]
    shards = [None] * dist.get_world_size()
    dist.all_gather_object(shards, seen)
    return shards


def plot_losses(log_history: list[dict], path: Path) -> list[str]:
    """Train and eval loss against the step, and a second panel with the task accuracy when it was measured
    (train.eval_metric). Uses matplotlib's object API, so no global backend is touched. Returns the panel
    titles."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    accuracy = [(r["step"], 100 * r["eval_accuracy"]) for r in log_history if "eval_accuracy" in r]
    fig = Figure(figsize=(7, 6.5 if accuracy else 4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True) if accuracy else [fig.add_subplot()]
    for key, label in (("loss", "train"), ("eval_loss", "eval")):
        points = [(r["step"], r[key]) for r in log_history if key in r]
        if points:
            axes[0].plot(*zip(*points), marker="." if key == "eval_loss" else None, label=label)
    axes[0].set_ylabel("loss")
    axes[0].set_title("loss")
    if axes[0].has_data():
        axes[0].legend()
    if accuracy:
        axes[1].plot(*zip(*accuracy), marker="o", color="C2")
        axes[1].set_ylabel("accuracy %")
        axes[1].set_title("task accuracy (validation)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("optimizer step")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, path)  # a viewer never sees half a file
    return [ax.get_title() for ax in axes]


class TrainingDiverged(UserError, RuntimeError):
    """A non-finite loss or gradient: the message names the step, the samples and the last good checkpoint."""


def check_finite(what: str, value, step: int, sample_ids: list[str], checkpoints_dir: Path, rank: int = 0):
    number = float(value) if value is not None else 0.0
    if math.isfinite(number):
        return
    shown = ", ".join(sample_ids[:32]) + (f" and {len(sample_ids) - 32} more" if len(sample_ids) > 32 else "")
    raise TrainingDiverged(
        f"training stopped at step {step}{f' on rank {rank}' if rank else ''}: the {what} is {number} for the "
        f"batch of samples [{shown}]. Check those samples (images, answers); if they are fine, the learning "
        f"rate is too high. {continue_advice(checkpoints_dir, step)}")


def continue_advice(checkpoints_dir: Path, step: int) -> str:
    """How to go on after step `step` went wrong. The weights saved after step - 1 are the ones that gave the
    bad result, so the checkpoint to trust with a lower rate is the newest one at step - 2 or earlier."""
    good, latest = last_good(checkpoints_dir, before=step - 2), last_good(checkpoints_dir)
    if good is None:
        advice = ("No checkpoint before the weights that gave this result is kept: start over with a lower "
                  "train.learning_rate (add train.overwrite=true to reuse this run directory).")
    else:
        advice = (f"Last good checkpoint: {good}. To continue from it at a lower rate, add `train.resume={good} "
                  f"train.learning_rate=LOWER train.resume_changes=[learning_rate]` to the command that started "
                  f"this run (with its hydra.run.dir).")
    if latest is not None and latest != good:
        advice += (f" {latest.name} holds the weights that met this batch: resume from it (train.resume=auto) "
                   "only when the samples were at fault and are fixed.")
    return advice


class NotLearning(RuntimeError):
    """Optimizer steps that change nothing, or a loss that stays at uniform guessing."""


class LearningCheck:
    """Stops a run that is not learning: `patience` optimizer steps in a row with a gradient norm of exactly 0,
    or with a loss within 1% of ln(vocab), the loss of a uniform guess over the vocabulary. A random tiny model
    starts above that value and crosses it in a step or two, so a model that learns never sits there."""

    def __init__(self, vocab_size: int, patience: int):
        self.uniform, self.patience = math.log(vocab_size), patience
        self.zero_steps = self.uniform_steps = 0

    def step(self, step: int, loss: float, grad_norm, device) -> None:
        zero = grad_norm is not None and float(grad_norm) == 0.0
        self.zero_steps = self.zero_steps + 1 if any_process(zero, device) else 0
        uniform = abs(loss - self.uniform) <= 0.01 * self.uniform
        self.uniform_steps = self.uniform_steps + 1 if any_process(uniform, device) else 0
        if self.zero_steps >= self.patience:
            raise NotLearning(
                f"training stopped at step {step}: the gradient norm has been exactly 0 for {self.zero_steps} "
                "steps in a row, so the adapters do not change. Check that the adapters are trainable "
                "(peft.target_modules match the model's layers) and that the answers are supervised "
                "(train.not_learning_steps=0 turns this check off).")
        if self.uniform_steps >= self.patience:
            raise NotLearning(
                f"training stopped at step {step}: the loss has stayed at {loss:.4f}, within 1% of ln(vocabulary "
                f"size) = {self.uniform:.4f} (a uniform guess over every token), for {self.uniform_steps} steps "
                "in a row: the model predicts nothing. Check the base weights (model.path) and the labels "
                "(train.not_learning_steps=0 turns this check off).")


class DivergenceWatch:
    """Losses and gradient norms kept as device scalars with the step and sample ids they came from, and read
    back together by `check` (one transfer) rather than one `.item()` per step, which would make the CPU wait for
    the GPU every step. The ids of every batch since the last check are kept, so the first non-finite value is
    still reported with its step and samples."""

    def __init__(self):
        self.pending: list[tuple[str, int, list[str], object]] = []  # (what, step, sample ids, value)

    def add(self, what: str, value, step: int, sample_ids: list[str]) -> None:
        if value is not None:
            self.pending.append((what, step, list(sample_ids), value.detach() if hasattr(value, "detach") else value))

    def check(self, checkpoints_dir: Path, rank: int = 0) -> None:
        """Raise TrainingDiverged for the first non-finite value since the last check."""
        import torch

        pending, self.pending = self.pending, []
        # Under FSDP the gradient norm is a DTensor: every rank reaches this check, so gathering it is safe.
        tensors = [(v.full_tensor() if hasattr(v, "full_tensor") else v).float().reshape(())
                   for *_, v in pending if torch.is_tensor(v)]
        numbers = iter(torch.stack(tensors).cpu().tolist() if tensors else [])
        for what, step, ids, value in pending:
            check_finite(what, next(numbers) if torch.is_tensor(value) else value, step, ids, checkpoints_dir, rank)


def check_supervised(collator, dataset, n: int = 64, batch_size: int = 8) -> None:
    """Refuse a run where every label is masked: its loss would be zero and the adapter would not change."""
    from lora_llava.data.collate import IGNORE_INDEX

    total = len(dataset)
    rows = sorted({i * total // min(n, total) for i in range(min(n, total))}) if total else []
    for start in range(0, len(rows), batch_size):
        batch = collator([dataset[i] for i in rows[start:start + batch_size]])
        if (batch["labels"] != IGNORE_INDEX).any():
            return
    raise DataError(
        f"nothing to learn: none of the {len(rows)} training samples checked (of {total}) has a supervised token, "
        "every label is -100, so training would change nothing. Check that each sample ends with a non-empty "
        "assistant answer and that data.prompt_format matches the model.")


def check_trackers(report_to) -> list[str]:
    """train.report_to, checked: only trackers named there, and installed, ever receive metrics."""
    names = [name for name in report_to if name != "none"]
    for name in names:
        if name == "all":
            raise ConfigError("train.report_to: `all` would report to every tracker that happens to be installed; "
                             f"name the ones you want, from {', '.join(TRACKERS)}")
        if name not in TRACKERS:
            raise ConfigError(f"train.report_to: unknown tracker {name!r}; choose from {', '.join(TRACKERS)}")
        if not any(find_spec(module) for module in TRACKERS[name]):
            extra = "pip install tensorboard" if name == "tensorboard" else f"pip install 'lora_llava[{name}]'"
            raise ConfigError(f"train.report_to lists {name}, which is not installed: {extra}")
    return names

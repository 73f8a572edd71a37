"""Task accuracy during training (train.eval_metric): at every evaluation, greedy answers to the first
train.eval_metric_limit validation questions, scored by eval.scorer and logged beside the eval loss as
`eval_accuracy` (TensorBoard, train_log.jsonl, loss.png). With train.best_by=accuracy the best evaluation's
adapter is kept in checkpoints/best/ and becomes the run's adapter; train.patience stops a run that has
stopped improving. The loss says little about answers: a model can lower it while its answers get worse.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import TrainerCallback

from lora_llava.eval.answers import answer_and_score

log = logging.getLogger("lora_llava")

BEST_DIR = "best"  # under checkpoints/: not a `checkpoint-N`, so rotation and resume leave it alone
BEST_FILE = "best.json"


def measure_accuracy(model, processor, samples, eval_cfg, data_cfg, step: int) -> dict:
    """{"accuracy", "n"} of `model`'s greedy answers to `samples` (a progress bar while it generates)."""
    _, metrics = answer_and_score(model, processor, samples, eval_cfg, data_cfg,
                                  desc=f"task accuracy at step {step}")
    return {"accuracy": metrics["accuracy"], "n": metrics["n"]}


class TaskMetric(TrainerCallback):
    """Measures after every evaluation; `log` is the trainer's log method (so the metric reaches every
    logger the loss reaches)."""

    def __init__(self, samples, processor, cfg, best_dir: Path, log_fn):
        self.samples, self.processor = samples, processor
        self.eval_cfg, self.data_cfg, self.train_cfg = cfg.eval, cfg.data, cfg.train
        self.best_dir, self.log_fn = Path(best_dir), log_fn
        self.best: dict | None = None  # {"step", "accuracy"}
        self.since_best = 0

    def on_train_begin(self, args, state, control, **kwargs):
        path = self.best_dir / BEST_FILE
        if path.is_file() and state.global_step:  # a resumed run keeps the best it had found
            self.best = json.loads(path.read_text())

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        result = measure_accuracy(model, self.processor, self.samples, self.eval_cfg, self.data_cfg, step)
        self.log_fn({"eval_accuracy": result["accuracy"], "eval_accuracy_n": result["n"]})
        log.info("step %d: task accuracy %.4f on %d validation questions", step, result["accuracy"], result["n"])
        if self.best is None or result["accuracy"] > self.best["accuracy"]:
            self.best, self.since_best = {"step": step, "accuracy": result["accuracy"]}, 0
            if self.train_cfg.best_by and state.is_world_process_zero:
                self.save_best(model)
        else:
            self.since_best += 1
        patience = self.train_cfg.patience
        if patience is not None and self.since_best >= patience:
            log.info("early stop at step %d: no better task accuracy in %d evaluations (best %.4f at step %d)",
                     step, patience, self.best["accuracy"], self.best["step"])
            control.should_training_stop = True
        return control

    def save_best(self, model) -> None:
        self.best_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(self.best_dir, safe_serialization=True)
        (self.best_dir / BEST_FILE).write_text(json.dumps(self.best) + "\n")


def add_task_metric(trainer, cfg) -> TaskMetric | None:
    """The TaskMetric callback for `trainer` when train.eval_metric is on: the first eval_metric_limit questions
    of its eval dataset (they carry train.answer_suffix, which follows eval.answer_suffix by default)."""
    if not cfg.train.eval_metric or trainer.eval_dataset is None:
        return None
    pool = trainer.data_collator.samples
    rows = trainer.eval_dataset["sample_index"][: cfg.train.eval_metric_limit or None]
    callback = TaskMetric([pool[i] for i in rows], trainer.processing_class, cfg,
                          Path(trainer.args.output_dir) / BEST_DIR, trainer.log)
    trainer.add_callback(callback)
    return callback


def restore_best(model, checkpoints_dir: Path, last_step: int) -> dict | None:
    """Load checkpoints/best/ (adapters and projector) into `model`; returns {"step", "accuracy"} or None."""
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    best_dir = Path(checkpoints_dir) / BEST_DIR
    if not (best_dir / BEST_FILE).is_file():
        log.warning("train.best_by=accuracy: no evaluation ran, so the adapter is the last step's (%d)", last_step)
        return None
    best = json.loads((best_dir / BEST_FILE).read_text())
    device = next(model.parameters()).device
    set_peft_model_state_dict(model, load_peft_weights(str(best_dir), device=str(device)))
    log.info("adapter: the best evaluation's, step %d of %d (task accuracy %.4f)", best["step"], last_step,
             best["accuracy"])
    return best

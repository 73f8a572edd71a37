"""Trainer.train as a long run needs it: refuse a run that cannot learn before its first step, resume from the
newest complete checkpoint, write the logs people read, and stop cleanly on SIGTERM / SIGINT."""

from __future__ import annotations

import logging
from pathlib import Path

from lora_llava.distributed import is_main_process
from lora_llava.train.callbacks import Preemption, TrainLog, check_supervised
from lora_llava.train.checkpoints import resolve_resume
from lora_llava.train.resume import check_resume_config
from lora_llava.train.task_metric import add_task_metric, restore_best

log = logging.getLogger("lora_llava")


def plan_resume(cfg, run_dir: Path) -> tuple[str | None, dict]:
    """(checkpoint to resume from or None, the allowed config changes): decided before any weights load, so a
    resume that would be refused costs nothing."""
    resume = resolve_resume(cfg.train.resume, Path(run_dir) / "checkpoints")
    return resume, (check_resume_config(cfg, Path(resume)) if resume else {})


def fit(trainer, cfg, run_dir: Path, resume: tuple[str | None, dict] | None = None):
    """Train with `trainer` (an LlavaSFTTrainer) per `cfg.train`; SystemExit(128 + signal) after a preemption.
    `resume` is plan_resume()'s answer (worked out here when not given)."""
    run_dir = Path(run_dir)
    checkpoints_dir = Path(trainer.args.output_dir)
    check_supervised(trainer.data_collator, trainer.train_dataset)
    train_log = TrainLog(run_dir / "logs", trainer.sample_ids_seen)
    trainer.add_callback(train_log)
    add_task_metric(trainer, cfg)
    preemption = Preemption()
    trainer.add_callback(preemption)
    resume, trainer.resume_changes = resume or plan_resume(cfg, run_dir)
    if resume and is_main_process():
        changes = {k: {"from": old, "to": new} for k, (old, new) in trainer.resume_changes.items()}
        TrainLog(run_dir / "logs").write({"event": "resume", "checkpoint": resume, "changes": changes})
    with preemption.installed():
        trainer.train(resume_from_checkpoint=resume)
    trainer.divergence.check(checkpoints_dir, trainer.args.process_index)  # whatever the last steps left unread
    if preemption.signum is not None:
        hint = resume_command(cfg, run_dir) if is_main_process() else None
        preemption.exit(checkpoints_dir, trainer.state.global_step, hint)
    if cfg.train.best_by:
        best = restore_best(trainer.model, checkpoints_dir, trainer.state.global_step)
        if best and is_main_process():
            train_log.write({"event": "best", "best_by": cfg.train.best_by, **best,
                             "last_step": trainer.state.global_step})
    if is_main_process():
        train_log.write({"event": "end", **run_cost(trainer.state.log_history)})
    return trainer


def run_cost(log_history: list[dict]) -> dict:
    """Train time (Trainer's train_runtime, this session) and peak memory: the GPU's allocator peak, or the
    process's peak resident memory on CPU. What a sweep summary compares."""
    import resource

    import torch

    runtime = next((r["train_runtime"] for r in reversed(log_history) if "train_runtime" in r), None)
    if torch.cuda.is_available():
        return {"train_runtime": runtime, "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30,
                "memory": "gpu"}
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {"train_runtime": runtime, "peak_memory_gb": rss_kb / 2**20, "memory": "cpu_rss"}


def resume_command(cfg, run_dir: Path) -> str:
    """The command line that continues this run: the user's overrides, the run directory, train.resume=auto."""
    overrides = []
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            overrides = [o for o in HydraConfig.get().overrides.task
                         if not o.startswith(("train.resume=", "hydra.run.dir="))]
    except ImportError:  # pragma: no cover - hydra is a dependency; this only guards odd embeddings
        pass
    return " ".join(["python -m lora_llava", f"recipe={cfg.recipe_name}", *overrides, "train.resume=auto",
                     f"hydra.run.dir={run_dir}"])

"""Run a composed config's stages in order. Each stage is a plain function a test can call."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lora_llava.checks import check_endpoint_ready, check_levers, check_values
from lora_llava.distributed import is_main_process
from lora_llava.errors import ConfigError
from lora_llava.preflight import check_stages
from lora_llava.rundir import claimed

log = logging.getLogger("lora_llava")


@dataclass
class RunContext:
    """What one stage hands to the next within a run (the trained model, the metrics, ...)."""

    run_dir: Path
    model: Any = None
    processor: Any = None
    adapter_dir: Path | None = None
    metrics: dict | None = None
    extra: dict = field(default_factory=dict)
    _splits: tuple | None = field(default=None, repr=False)  # (data config as YAML, load_splits's result)

    def splits(self, data_cfg) -> dict:
        """load_splits(data_cfg), loaded once per run: the preflight check, train and eval share it (a large
        dataset is read and parsed once, not three times). Samples are never changed in place, so sharing is safe."""
        from omegaconf import OmegaConf

        from lora_llava.data import load_splits

        key = OmegaConf.to_yaml(data_cfg)
        if self._splits is None or self._splits[0] != key:
            self._splits = (key, load_splits(data_cfg))
        return self._splits[1]

    def forget_data(self) -> None:
        """After a stage that writes data (generate), the next load reads the files again."""
        self._splits = None


def _stage(name: str) -> Callable[[DictConfig, RunContext], None]:
    # Imported lazily so that `--cfg job` and config errors never pay for torch/transformers imports.
    if name == "generate":
        from lora_llava.endpoint.generate import generate_stage as fn
    elif name == "train":
        from lora_llava.train.stage import train_stage as fn
    elif name == "eval":
        from lora_llava.eval.stage import eval_stage as fn
    elif name == "compare":
        from lora_llava.eval.compare import compare_stage as fn
    elif name == "export":
        from lora_llava.export.stage import export_stage as fn
    elif name == "validate":
        from lora_llava.data.validate import validate_stage as fn
    elif name == "plan":
        from lora_llava.plan import plan_stage as fn
    elif name == "push":
        from lora_llava.export.publish import push_stage as fn
    else:
        raise ConfigError(f"unknown stage {name!r}")
    return fn


def run(cfg: DictConfig, run_dir: str | Path) -> RunContext:
    check_values(cfg)
    check_levers(cfg)  # optional packages and GPU levers, before any stage loads a model
    check_endpoint_ready(cfg)
    ctx = RunContext(run_dir=Path(run_dir))
    check_stages(cfg, ctx)  # every stage's needs, before the first one loads anything
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    with claimed(cfg, ctx.run_dir):  # locked, and checked that this command may write there (rundir.py)
        for name in cfg.stages:
            if name != "train" and not is_main_process():
                continue  # under torchrun / accelerate: all processes train, rank 0 alone evaluates and writes
            log.info("stage %s", name)
            _stage(name)(cfg, ctx)
            if name == "generate":
                ctx.forget_data()
    return ctx

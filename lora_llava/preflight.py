"""Every stage's needs, checked before the first stage runs, so that hours of training never end in a config
error of a later stage (a missing eval split, an adapter path that is not there, a merge that cannot work)."""

from __future__ import annotations

import json
from pathlib import Path

from lora_llava.errors import ConfigError, MissingPathError

# Stages that load weights or take long: a later stage's mistake must be found before they run.
HEAVY = ("train", "export", "push")


def check_stages(cfg, ctx) -> None:
    """`ctx`: the run's RunContext (its run directory; data loaded here is kept in it for the stages)."""
    stages = list(cfg.stages)
    if cfg.adapter is not None:
        from lora_llava.models.load import check_adapter_source

        check_adapter_source(Path(cfg.adapter))
    for stage in ("eval", "export", "push"):
        if stage in stages:
            NEEDS[stage](cfg, stages, ctx)


def _eval_needs(cfg, stages: list[str], ctx) -> None:
    if cfg.eval.predictions and not Path(cfg.eval.predictions).is_file():
        raise MissingPathError(f"eval.predictions={cfg.eval.predictions}: no such file")
    if any(s in HEAVY for s in stages[: stages.index("eval")]):
        from lora_llava.data import require_split

        require_split(ctx.splits(cfg.data), cfg.eval.split, "eval.split")


def _export_needs(cfg, stages: list[str], ctx) -> None:
    aligned = cfg.peft.method == "none" and cfg.model.projector  # an align run exports the base with its projector
    if "train" not in stages and cfg.adapter is None and not aligned:
        raise ConfigError("stages has export but neither train nor adapter=PATH: pass the adapter to export, "
                          "e.g. adapter=outputs/<recipe>/<time>/adapter")
    config = Path(cfg.model.path) / "config.json"
    if cfg.export.merge and config.is_file() and "quantization_config" in json.loads(config.read_text()):
        raise ConfigError(f"export.merge=true but model.path={cfg.model.path} is a quantized checkpoint; merging "
                          "needs the 16-bit base the adapter was trained from: point model.path at it")


def _push_needs(cfg, stages: list[str], ctx) -> None:
    if cfg.hub.what != "merged":
        if "train" not in stages and cfg.adapter is None:
            raise ConfigError("stages has push but neither train nor adapter=PATH: pass the adapter to publish")
        return
    merges_first = "export" in stages[: stages.index("push")] and cfg.export.merge
    candidates = [ctx.run_dir / "merged"] + ([Path(cfg.adapter).parent / "merged"] if cfg.adapter else [])
    if not merges_first and not any((c / "config.json").is_file() for c in candidates):
        raise ConfigError(f"hub.what=merged but no stage before push merges (export with export.merge=true) and "
                          f"there is no merged model in {' or '.join(map(str, candidates))}")


NEEDS = {"eval": _eval_needs, "export": _export_needs, "push": _push_needs}

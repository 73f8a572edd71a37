"""The export stage: a complete Hub-style adapter folder (weights, processor, model card) and, when asked, a
merged model (merge.py).

`adapter/` holds adapter_config.json, adapter_model.safetensors (the LoRA weights and the trained projector),
the processor files and README.md. The train stage writes it and this stage refreshes the card once metrics
exist; with `adapter=PATH` and no training it is assembled from PATH (which may be a trainer checkpoint).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from lora_llava.errors import ConfigError
from lora_llava.models.load import PICKLE_SUFFIXES, check_adapter_source, describe_base_in_config

log = logging.getLogger("lora_llava")



def find_metrics(cfg, ctx) -> dict | None:
    """This run's metrics, else the eval/metrics.json of this run or of the run the adapter came from."""
    if ctx.metrics:
        return ctx.metrics
    candidates = [ctx.run_dir / "eval" / "metrics.json"]
    if cfg.adapter:
        candidates.append(Path(cfg.adapter).parent / "eval" / "metrics.json")
    for path in candidates:
        if path.is_file():
            log.info("model card: evaluation from %s", path)
            return json.loads(path.read_text())
    return None


def assemble_adapter(cfg, src: Path, out_dir: Path) -> Path:
    """Copy an existing adapter into `out_dir`, leaving out trainer state and pickles (listed in the log),
    adding the processor when the source has none, then the base description and a fresh card."""
    from lora_llava.models.load import load_processor

    src, out_dir = Path(src), Path(out_dir)
    check_adapter_source(src)
    out_dir.mkdir(parents=True, exist_ok=True)
    if src.resolve() == out_dir.resolve():
        describe_base_in_config(out_dir, cfg)
        return out_dir
    skipped = []
    for path in sorted(p for p in src.iterdir() if p.is_file()):
        if path.suffix in PICKLE_SUFFIXES or path.name == "trainer_state.json":
            skipped.append(path.name)
        elif path.name != "README.md":  # the card is written afresh by the export stage
            shutil.copy2(path, out_dir / path.name)
    if skipped:
        log.info("not copied from %s: %s (training state and pickles)", src, ", ".join(skipped))
    if not any((out_dir / name).is_file() for name in ("processor_config.json", "preprocessor_config.json")):
        log.info("%s has no processor files: adding the base model's processor", src)
        load_processor(cfg.model).save_pretrained(out_dir)
    describe_base_in_config(out_dir, cfg)
    return out_dir


def ensure_adapter_dir(cfg, ctx) -> Path:
    """This run's complete adapter folder: the trained one, else one assembled from `adapter=PATH`."""
    if ctx.adapter_dir is not None:
        return ctx.adapter_dir
    if cfg.adapter is None:
        raise ConfigError("no adapter to export: run the train stage first or pass adapter=PATH "
                         "(e.g. stages=[export] adapter=outputs/<recipe>/<time>/adapter)")
    ctx.adapter_dir = assemble_adapter(cfg, Path(cfg.adapter), ctx.run_dir / "adapter")
    return ctx.adapter_dir


def export_stage(cfg, ctx) -> None:
    from lora_llava.models.card import write_model_card

    adapter_dir = ensure_adapter_dir(cfg, ctx)
    metrics = find_metrics(cfg, ctx)
    write_model_card(adapter_dir, cfg, metrics)
    log.info("adapter folder: %s", adapter_dir)
    if cfg.export.merge:
        from lora_llava.export.merge import merge_and_save

        ctx.extra["verification"] = merge_and_save(cfg, adapter_dir, ctx.run_dir / "merged")
        write_model_card(ctx.run_dir / "merged", cfg, metrics, merged=True)

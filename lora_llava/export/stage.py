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


def find_comparison(cfg, ctx) -> str | None:
    """The compare stage's table as markdown for the model card: this run's, else the adapter's run's."""
    from lora_llava.eval.scoring.comparison import render_comparison

    results = ctx.extra.get("compare")
    candidates = [ctx.run_dir / "eval" / "compare.json"]
    if cfg.adapter:
        candidates.append(Path(cfg.adapter).parent / "eval" / "compare.json")
    for path in candidates:
        if results is None and path.is_file():
            results = json.loads(path.read_text())
    return render_comparison(results, heading="##") if results else None


def assemble_adapter(cfg, src: Path, out_dir: Path) -> Path:
    """Copy an existing adapter into `out_dir`, leaving out trainer state and pickles (listed in the log),
    adding the processor when the source has none, then the base description and a fresh card."""
    from lora_llava.models.load import load_processor
    from lora_llava.rundir import check_adapter_target

    src, out_dir = Path(src), Path(out_dir)
    check_adapter_source(src)
    check_adapter_target(cfg, out_dir.parent)  # never over another run's adapter
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


def export_aligned(cfg, ctx) -> None:
    """An align run (peft.method=none) has no adapter: its projector folder is the product. export.merge=true
    also writes merged/, the base with that projector, a plain checkpoint that model.path can name."""
    from lora_llava.models.card import write_model_card

    projector_dir = ctx.extra.get("projector_dir") or cfg.model.projector
    if projector_dir is None:
        raise ConfigError("export of an align run (peft.method=none) needs its projector: run the train stage "
                          "first, or pass model.projector=<run>/projector")
    print(f"align run: no adapter to export; the aligned projector is {projector_dir} (fine-tune from it with "
          f"model.projector={projector_dir})" + ("" if cfg.export.merge else
                                                 "; export.merge=true writes the base with it as merged/"))
    if cfg.export.merge:
        from lora_llava.export.merge import merge_and_save

        ctx.extra["verification"] = merge_and_save(cfg, None, ctx.run_dir / "merged", projector_dir)
        write_model_card(ctx.run_dir / "merged", cfg, find_metrics(cfg, ctx), merged=True)


def export_stage(cfg, ctx) -> None:
    from lora_llava.models.card import write_model_card

    if cfg.peft.method == "none":
        return export_aligned(cfg, ctx)
    adapter_dir = ensure_adapter_dir(cfg, ctx)
    metrics, comparison = find_metrics(cfg, ctx), find_comparison(cfg, ctx)
    write_model_card(adapter_dir, cfg, metrics, comparison=comparison)
    log.info("adapter folder: %s", adapter_dir)
    if cfg.export.merge:
        from lora_llava.errors import disk_full_message
        from lora_llava.export.merge import merge_and_save
        from lora_llava.rundir import swap_in

        # Written and verified in a fresh folder, then swapped in: an earlier merged/ is never mixed with new
        # shards, and a failed export leaves it as it was (the failed attempt stays in .merged-incomplete/).
        staging = ctx.run_dir / ".merged-incomplete"
        shutil.rmtree(staging, ignore_errors=True)
        with disk_full_message("writing the merged model", ctx.run_dir, cleanup=staging):
            ctx.extra["verification"] = merge_and_save(cfg, adapter_dir, staging)
            write_model_card(staging, cfg, metrics, merged=True, comparison=comparison)
        swap_in(staging, ctx.run_dir / "merged")
        log.info("merged model: %s", ctx.run_dir / "merged")
    if cfg.export.vllm_lora:
        from lora_llava.export.vllm_lora import export_vllm_lora

        export_vllm_lora(adapter_dir, ctx.run_dir / "vllm_lora", cfg.peft.target_modules)

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

log = logging.getLogger("lora_llava")

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


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


def describe_base_in_config(out_dir: Path, cfg) -> None:
    """adapter_config.json names the base by its Hub id (and revision) when known. For a local base, peft's
    path stays: it is what AutoPeftModel loads on this machine; the card says where the base comes from."""
    from lora_llava.card import base_model_id

    path = Path(out_dir) / "adapter_config.json"
    config = json.loads(path.read_text())
    if base_model_id(cfg):
        config["base_model_name_or_path"] = base_model_id(cfg)
    if cfg.model.revision:
        config["revision"] = cfg.model.revision
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_adapter(model, processor, out_dir: Path, cfg, metrics: dict | None = None) -> Path:
    """adapter_config.json + adapter_model.safetensors (LoRA and the trained projector) + processor + card."""
    from lora_llava.card import write_model_card

    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    describe_base_in_config(out_dir, cfg)
    write_model_card(out_dir, cfg, metrics)
    return out_dir


def check_adapter_source(src: Path) -> None:
    if not (src / "adapter_config.json").is_file():
        raise FileNotFoundError(f"adapter={src}: no adapter_config.json there; point adapter= at a folder "
                                "written by the train stage (<run>/adapter) or a checkpoint "
                                "(<run>/checkpoints/checkpoint-N)")
    if not (src / "adapter_model.safetensors").is_file():
        pickled = [p.name for p in src.glob("adapter_model*") if p.suffix in PICKLE_SUFFIXES]
        hint = (f" It has {', '.join(pickled)}, a pickle, which this toolkit does not load: re-save it with "
                "save_pretrained(..., safe_serialization=True).") if pickled else ""
        raise FileNotFoundError(f"adapter={src}: no adapter_model.safetensors.{hint}")


def assemble_adapter(cfg, src: Path, out_dir: Path) -> Path:
    """Copy an existing adapter into `out_dir`, leaving out trainer state and pickles (listed in the log),
    adding the processor when the source has none, then the base description and a fresh card."""
    from lora_llava.model import load_processor

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


def load_adapted(cfg, adapter: str | None):
    """The base model with `adapter` applied (or the bare model.path when no adapter is given)."""
    from peft import PeftModel

    from lora_llava.model import build_model_and_processor

    model, processor = build_model_and_processor(cfg.model, cfg.quant)
    if adapter is None:
        log.warning("no adapter given: evaluating %s as it is", cfg.model.path)
        return model, processor
    check_adapter_source(Path(adapter))
    return PeftModel.from_pretrained(model, adapter), processor


def ensure_adapter_dir(cfg, ctx) -> Path:
    """This run's complete adapter folder: the trained one, else one assembled from `adapter=PATH`."""
    if ctx.adapter_dir is not None:
        return ctx.adapter_dir
    if cfg.adapter is None:
        raise ValueError("no adapter to export: run the train stage first or pass adapter=PATH "
                         "(e.g. stages=[export] adapter=outputs/<recipe>/<time>/adapter)")
    ctx.adapter_dir = assemble_adapter(cfg, Path(cfg.adapter), ctx.run_dir / "adapter")
    return ctx.adapter_dir


def export_stage(cfg, ctx) -> None:
    from lora_llava.card import write_model_card

    adapter_dir = ensure_adapter_dir(cfg, ctx)
    metrics = find_metrics(cfg, ctx)
    write_model_card(adapter_dir, cfg, metrics)
    log.info("adapter folder: %s", adapter_dir)
    if cfg.export.merge:
        from lora_llava.merge import merge_and_save

        ctx.extra["verification"] = merge_and_save(cfg, adapter_dir, ctx.run_dir / "merged")
        write_model_card(ctx.run_dir / "merged", cfg, metrics, merged=True)

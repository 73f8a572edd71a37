"""The export stage: the adapter folder (weights, processor, model card) and, when asked, a merged model."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("lora_llava")


def save_adapter(model, processor, out_dir: Path, cfg) -> Path:
    """adapter_config.json + adapter_model.safetensors (LoRA and the trained projector) + processor + card."""
    from lora_llava.card import write_model_card

    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    write_model_card(out_dir, cfg)
    return out_dir


def load_adapted(cfg, adapter: str | None):
    """The base model with `adapter` applied (or the bare model.path when no adapter is given)."""
    from peft import PeftModel

    from lora_llava.model import build_model_and_processor

    model, processor = build_model_and_processor(cfg.model, cfg.quant)
    if adapter is None:
        log.warning("no adapter given: evaluating %s as it is", cfg.model.path)
        return model, processor
    if not (Path(adapter) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"adapter={adapter}: no adapter_config.json there")
    return PeftModel.from_pretrained(model, adapter), processor


def export_stage(cfg, ctx) -> None:
    if ctx.model is None:
        ctx.model, ctx.processor = load_adapted(cfg, cfg.adapter)
    if ctx.adapter_dir is None:
        ctx.adapter_dir = save_adapter(ctx.model, ctx.processor, ctx.run_dir / "adapter", cfg)
    else:  # refresh the card now that metrics exist
        from lora_llava.card import write_model_card

        write_model_card(ctx.adapter_dir, cfg, ctx.metrics)
    if cfg.export.merge:
        from lora_llava.merge import merge_and_save

        merge_and_save(cfg, ctx.adapter_dir, ctx.run_dir / "merged")

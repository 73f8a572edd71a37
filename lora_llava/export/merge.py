"""Merge an adapter into a 16-bit (or fp32) copy of its base, save `merged/`, and check the saved model.

The base is always reloaded unquantized in `export.dtype`, also after QLoRA training: merging into 4-bit
weights would round the LoRA update away, and a 4-bit checkpoint is not what a serving stack expects. The
check reloads `merged/` from disk with AutoModelForImageTextToText and the family's processor loader and compares its logits
with the adapter applied to the same base (not to the 4-bit one: that gap is QLoRA's; no merge can close it).
"""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path

import torch

from lora_llava.errors import ConfigError

log = logging.getLogger("lora_llava")

# Allowed max |logit difference| = absolute + relative * (largest |reference logit|). Merging rounds W + BA
# once in the export dtype while the adapter path rounds each matmul, so 16-bit tolerances follow their
# precision (bf16 keeps 8 mantissa bits, fp16 11); fp32 differs only by summation order.
# export.tolerance replaces the rule with a fixed number.
TOLERANCE = {"float32": (1e-4, 0.0), "float16": (0.0, 1e-2), "bfloat16": (0.0, 4e-2)}
N_PROBES = 4


def probe_batch(processor):
    """A few fixed image questions (synthetic shapes), as a model input batch with prompts only."""
    from lora_llava.data.collate import Collator
    from lora_llava.data.synthetic import make_samples

    return Collator(processor, generation=True)(make_samples(N_PROBES, 64, seed=1234, prefix="probe"))


@torch.no_grad()
def probe_logits(model, batch) -> torch.Tensor:
    """Logits at every real (non-padding) position, in float32 on the CPU."""
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items()}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    logits = model.eval()(**inputs).logits.float().cpu()
    return logits[batch["attention_mask"].bool()]


def leftover_layers(model) -> dict[str, int]:
    """Counts of what must not survive a merge: quantized linears and LoRA layers."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from lora_llava.models.quant import is_quantized_layer

    modules = list(model.modules())
    return {"quantized_layers": sum(is_quantized_layer(m) for m in modules),
            "lora_layers": sum(isinstance(m, BaseTunerLayer) for m in modules)}


def load_base(cfg, dtype: torch.dtype):
    from lora_llava.models.load import build_model_and_processor

    base, processor = build_model_and_processor(cfg.model, None, dtype=dtype)
    if leftover_layers(base)["quantized_layers"]:
        raise ConfigError(f"model.path={cfg.model.path} loads as a quantized checkpoint; merging needs the "
                         "unquantized base: point model.path at the 16-bit model the adapter was trained "
                         "from")
    return base, processor


def make_servable(merged, processor) -> None:
    """What serving engines read besides the weights: a chat template (the training prompt format when the
    base's processor has none) and a generation config that knows the pad and end tokens."""
    from lora_llava.models.families import family_for_config

    template = None if processor.chat_template else family_for_config(merged.config).serving_template(processor)
    if template:
        log.info("the processor has no chat template: saving the training prompt format as one")
        processor.chat_template = template
    config, tokenizer = merged.generation_config, processor.tokenizer
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    if config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id


def save_merged(merged, processor, out_dir: Path, max_shard_size: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    make_servable(merged, processor)
    merged.save_pretrained(out_dir, max_shard_size=max_shard_size)
    processor.save_pretrained(out_dir)
    pickles = [p.name for p in out_dir.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    if pickles:  # transformers 5 writes safetensors only; this guards the promise if that ever changes
        raise RuntimeError(f"{out_dir}: pickled files were written ({', '.join(pickles)}); "
                           "expected safetensors only")


def tolerance(cfg, expected: torch.Tensor) -> float:
    if cfg.export.tolerance is not None:
        return float(cfg.export.tolerance)
    absolute, relative = TOLERANCE[cfg.export.dtype]
    return absolute + relative * expected.abs().max().item()


def compare_reloaded(cfg, out_dir: Path, batch, expected: torch.Tensor, dtype: torch.dtype) -> dict:
    """Reload merged/ exactly as a user would and compare its logits with the adapter-on-base ones."""
    from transformers import AutoModelForImageTextToText

    from lora_llava.models.load import _device_map, load_processor

    processor = load_processor(cfg.model, str(out_dir))
    reloaded_batch = probe_batch(processor)
    if not torch.equal(reloaded_batch["input_ids"], batch["input_ids"]):
        raise RuntimeError(f"{out_dir}: the saved processor tokenizes differently from the base's processor")
    model = AutoModelForImageTextToText.from_pretrained(out_dir, dtype=dtype, device_map=_device_map())
    actual = probe_logits(model, reloaded_batch)
    diff = (actual - expected).abs()
    return {"max_abs_diff": diff.max().item(), "mean_abs_diff": diff.mean().item(),
            "top1_agreement": (actual.argmax(-1) == expected.argmax(-1)).float().mean().item(),
            "n_samples": N_PROBES, "n_positions": int(expected.shape[0]), **leftover_layers(model)}


def merge(cfg, adapter_dir: Path, dtype: torch.dtype):
    """(merged model, processor, probe batch, adapter-on-base probe logits taken before merging)."""
    from lora_llava.models.load import apply_saved_adapter

    base, processor = load_base(cfg, dtype)
    model = apply_saved_adapter(base, adapter_dir, cfg.model)
    batch = probe_batch(processor)
    expected = probe_logits(model, batch)
    merged = model.merge_and_unload()
    leftovers = leftover_layers(merged)
    if any(leftovers.values()):
        raise RuntimeError(f"merging {adapter_dir} left {leftovers} in the model; nothing was saved")
    return merged, processor, batch, expected


def with_projector(cfg, projector_dir: Path, dtype: torch.dtype):
    """An align run's counterpart of merge(): the base with its projector loaded, as (model, processor, probe
    batch, probe logits)."""
    from omegaconf import OmegaConf

    from lora_llava.models.load import build_model_and_processor

    model_cfg = OmegaConf.merge(cfg.model, {"projector": str(projector_dir)})
    model, processor = build_model_and_processor(model_cfg, None, dtype=dtype)
    batch = probe_batch(processor)
    return model, processor, batch, probe_logits(model, batch)


def check_report(cfg, out_dir: Path, report: dict) -> None:
    (out_dir / "verification.json").write_text(json.dumps(report, indent=2) + "\n")
    if report["passed"] is False:
        raise RuntimeError(
            f"merged model check failed: max |logit difference| {report['max_abs_diff']:.3g} between "
            f"{out_dir} and the adapter on the {cfg.export.dtype} base exceeds {report['tolerance']:.3g} "
            "(see verification.json; export.tolerance sets the limit)")


def merge_and_save(cfg, adapter_dir: Path | None, out_dir: Path, projector_dir: Path | None = None) -> dict:
    """Merge `adapter_dir` (or, for an align run, `projector_dir`) into the base in export.dtype, save and
    verify `out_dir`; returns what verification.json records."""
    from lora_llava.models.card import base_model_id

    out_dir, dtype = Path(out_dir), getattr(torch, cfg.export.dtype)
    source = Path(adapter_dir or projector_dir)
    merged, processor, batch, expected = (merge(cfg, adapter_dir, dtype) if adapter_dir is not None
                                          else with_projector(cfg, projector_dir, dtype))
    log.info("merged %s into %s (%s); saving %s", source, cfg.model.path, cfg.export.dtype, out_dir)
    save_merged(merged, processor, out_dir, cfg.export.max_shard_size)
    report = {"dtype": cfg.export.dtype, "base": base_model_id(cfg) or Path(cfg.model.path).name,
              "adapter" if adapter_dir is not None else "projector": source.name,
              "trained_with_quant": cfg.quant.method,
              **leftover_layers(merged), "shards": sorted(p.name for p in out_dir.glob("*.safetensors"))}
    del merged  # one copy of the model in memory at a time: the reload below is the second
    gc.collect()
    report["passed"] = None  # export.verify=false: saved, not checked
    if cfg.export.verify:
        report.update(compare_reloaded(cfg, out_dir, batch, expected, dtype))
        report["tolerance"] = tolerance(cfg, expected)
        report["passed"] = report["max_abs_diff"] <= report["tolerance"] and not report["quantized_layers"]
    check_report(cfg, out_dir, report)
    log.info("merged model saved to %s (max |logit difference| %s)", out_dir,
             report.get("max_abs_diff", "unchecked"))
    return report

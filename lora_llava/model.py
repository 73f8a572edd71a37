"""build_model_and_processor(): a LLaVA checkpoint (Hub id or local directory) or the tiny random model."""

from __future__ import annotations

import logging
import os

import torch

from lora_llava.quant import build_quant_config

log = logging.getLogger("lora_llava")


def resolve_dtype(name: str) -> torch.dtype:
    """`auto`: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    if name != "auto":
        return getattr(torch, name)
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def checkpoint_path(model_cfg) -> str:
    if model_cfg.path == "tiny":
        from lora_llava.tiny import tiny_checkpoint

        return str(tiny_checkpoint(model_cfg.seed))
    return model_cfg.path


def _device_map():
    if not torch.cuda.is_available():
        return None
    # FSDP and ZeRO-3 shard the model themselves (conf/accelerate/): a whole copy per GPU is what they avoid.
    if os.environ.get("ACCELERATE_USE_FSDP") == "true" or os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
        return None
    # One process per GPU under accelerate/torchrun (DDP, ZeRO-2): each loads the whole model onto its own device.
    return {"": int(os.environ.get("LOCAL_RANK", 0))}


def load_processor(model_cfg, path: str | None = None):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(
        path or checkpoint_path(model_cfg), revision=model_cfg.revision,
        trust_remote_code=model_cfg.trust_remote_code,
    )


def build_model_and_processor(model_cfg, quant_cfg, dtype: torch.dtype | None = None, path: str | None = None):
    """Load model and processor. `dtype` overrides model.dtype (export reloads the base in 16-bit);
    `path` overrides model.path (a merged model)."""
    from transformers import LlavaForConditionalGeneration

    path = path or checkpoint_path(model_cfg)
    dtype = dtype or resolve_dtype(model_cfg.dtype)
    quant = build_quant_config(quant_cfg, dtype) if quant_cfg is not None else None
    model = LlavaForConditionalGeneration.from_pretrained(
        path,
        revision=model_cfg.revision,
        dtype=dtype,
        quantization_config=quant,
        attn_implementation=model_cfg.attn_implementation,
        trust_remote_code=model_cfg.trust_remote_code,
        device_map=_device_map(),
        use_safetensors=True,
    )
    processor = load_processor(model_cfg, path)
    if processor.tokenizer.pad_token is None:
        # Llama tokenizers ship without one; LLaVA's own code pads with unk.
        processor.tokenizer.pad_token = processor.tokenizer.unk_token
    log.info("loaded %s (%s%s)", path, str(dtype).replace("torch.", ""),
             f", {quant_cfg.method}" if quant is not None else "")
    return model, processor

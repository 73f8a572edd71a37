"""The only module that touches bitsandbytes: BitsAndBytesConfig for 4-bit NF4 and 8-bit loading."""

from __future__ import annotations

import re

import torch


def build_quant_config(cfg, compute_dtype: torch.dtype, family_skip: list[str] = ()):
    """A transformers BitsAndBytesConfig for `quant.method`, or None. The family's own list (vision tower,
    projector, lm_head) and `quant.skip_modules` are never quantized."""
    if cfg.method == "none":
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:  # pragma: no cover - bitsandbytes is a declared dependency
        raise ImportError("quant.method needs bitsandbytes: pip install bitsandbytes") from err
    from transformers import BitsAndBytesConfig

    # transformers matches skip patterns from the start of the full module name ("model.vision_tower...");
    # a bare "vision_tower" would match nothing there and the CLIP tower would be quantized.
    names = dict.fromkeys([*family_skip, *cfg.skip_modules])
    skip = [rf"(?:.*\.)?{re.escape(name)}" for name in names]
    if cfg.method == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    dtype = compute_dtype if cfg.bnb_4bit_compute_dtype == "auto" else getattr(torch, cfg.bnb_4bit_compute_dtype)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=cfg.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_quant_storage=torch.uint8,
        llm_int8_skip_modules=skip,
    )


def is_quantized_layer(module) -> bool:
    name = type(module).__name__
    return name in ("Linear4bit", "Linear8bitLt")

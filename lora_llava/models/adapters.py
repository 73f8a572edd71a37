"""LoRA / DoRA / rsLoRA on the language model; vision tower frozen; projector trained with its own LR."""

from __future__ import annotations

import logging
import re
import warnings
from collections import Counter
from contextlib import contextmanager

log = logging.getLogger("lora_llava")

PROJECTOR = "multi_modal_projector"


def target_regex(target_modules, scope: str) -> str:
    """A regex peft matches against full module names. `language_model` scope keeps LoRA out of the CLIP
    tower, whose attention layers share the q_proj/k_proj/v_proj names."""
    names = "|".join(re.escape(m) for m in target_modules)
    if scope == "language_model":
        return rf"^(?!.*vision_tower).*language_model\..*\.({names})$"
    return rf"^.*\.({names})$"


def build_lora_config(peft_cfg):
    from peft import LoraConfig

    return LoraConfig(
        r=peft_cfg.r,
        lora_alpha=peft_cfg.lora_alpha,
        lora_dropout=peft_cfg.lora_dropout,
        target_modules=target_regex(peft_cfg.target_modules, peft_cfg.scope),
        use_dora=peft_cfg.use_dora,
        use_rslora=peft_cfg.use_rslora,
        bias=peft_cfg.bias,
        modules_to_save=[PROJECTOR] if peft_cfg.train_projector else None,
        task_type="CAUSAL_LM",
    )


def apply_adapters(model, peft_cfg, quantized: bool, gradient_checkpointing: bool):
    """Freeze the base, add adapters, make the projector trainable (a saved copy, via modules_to_save)."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    for param in model.parameters():
        param.requires_grad_(False)
    with peft_reading_old_names():
        if quantized:  # checkpointing is enabled below, under transformers 5's name for it
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        if gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        model = get_peft_model(model, build_lora_config(peft_cfg))
    for group, count in trainable_by_group(model).items():
        log.info("trainable %-16s %12s parameters", group, f"{count:,}")
    return model


@contextmanager
def peft_reading_old_names():
    """peft 0.21 still reads `model.is_gradient_checkpointing`, which transformers 5 renamed (a FutureWarning on
    every run that the user can do nothing about); only that warning is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def module_group(name: str) -> str:
    if "vision_tower" in name:
        return "vision_tower"
    if PROJECTOR in name:
        return "projector"
    if "lora_" in name:
        return "lora"
    return "other"


def trainable_by_group(model) -> dict[str, int]:
    counts = Counter()
    for name, param in model.named_parameters():
        if param.requires_grad:
            counts[module_group(name)] += param.numel()
    return dict(counts)


def optimizer_param_groups(model, learning_rate: float, projector_learning_rate: float, weight_decay: float):
    """Two groups: adapters at `learning_rate`, the projector at `projector_learning_rate` (LLaVA-1.5: 2e-4 / 2e-5)."""
    adapters, projector = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (projector if PROJECTOR in name else adapters).append(param)
    groups = [{"params": adapters, "lr": learning_rate, "weight_decay": weight_decay}]
    if projector:
        groups.append({"params": projector, "lr": projector_learning_rate, "weight_decay": weight_decay})
    return groups

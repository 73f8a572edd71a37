"""LoRA / DoRA / rsLoRA on the language model; vision tower frozen; projector trained with its own LR. Module
names and the LoRA scope come from the model's family (models/families.py)."""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from contextlib import contextmanager

from lora_llava.models.base import Family
from lora_llava.models.families import FAMILIES, family_for_config

log = logging.getLogger("lora_llava")

# What trains beside the adapters, and alone in an align run (peft.method=none): every family's projector module.
PROJECTOR_NAMES = tuple(dict.fromkeys(f.projector for f in FAMILIES))
PROJECTOR = PROJECTOR_NAMES[0]  # the module name all current families share


def is_projector(name: str) -> bool:
    """A projector parameter, by its full name (in the bare base or under a peft wrapper)."""
    return any(part in PROJECTOR_NAMES for part in name.split("."))


def model_family(model) -> Family:
    """The family of a model, a PeftModel around one, or a DDP-wrapped one."""
    return family_for_config(getattr(model, "module", model).config)


def build_lora_config(peft_cfg, family: Family):
    from peft import LoraConfig

    return LoraConfig(
        r=peft_cfg.r,
        lora_alpha=peft_cfg.lora_alpha,
        lora_dropout=peft_cfg.lora_dropout,
        target_modules=family.lora_target_regex(peft_cfg.target_modules, peft_cfg.scope),
        use_dora=peft_cfg.use_dora,
        use_rslora=peft_cfg.use_rslora,
        bias=peft_cfg.bias,
        modules_to_save=[family.projector] if peft_cfg.train_projector else None,
        task_type="CAUSAL_LM",
    )


def apply_adapters(model, peft_cfg, quantized: bool, gradient_checkpointing: bool):
    """Freeze the base, add adapters, make the projector trainable (a saved copy, via modules_to_save). With
    peft.method=none the bare base comes back with its projector alone trainable.

    Replaces peft's prepare_model_for_kbit_training, which upcasts every non-4-bit weight to fp32 (CLIP tower,
    embeddings, lm_head, norms: 587M parameters, 1.1 GiB more at 7B, and an fp32 residual stream) and hooks
    input gradients onto every embedding it finds, CLIP's patch embedding included (backward then runs through
    the frozen tower). Here the frozen base keeps its loaded dtype, only what trains is fp32, and with
    checkpointing only the language model's input embeddings are hooked. `quantized` needs no other step."""
    from peft import get_peft_model

    for param in model.parameters():
        param.requires_grad_(False)
    if gradient_checkpointing:
        # Non-reentrant: gradients reach the adapters inside a checkpointed layer without any input hook.
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.disable_input_require_grads()  # transformers hooked the CLIP tower's patch embedding too
    if peft_cfg.method == "none":
        model = train_projector_only(model)
    else:
        with peft_reading_old_names():
            model = get_peft_model(model, build_lora_config(peft_cfg, model_family(model)))
    if gradient_checkpointing:
        hook_language_inputs(model.get_base_model() if peft_cfg.method != "none" else model)
        if peft_cfg.scope == "language_model":
            checkpoint_language_model_only(model)
    cast_trainable_fp32(model)
    cast_projector_inputs(model)
    for group, count in trainable_by_group(model).items():
        log.info("trainable %-16s %12s parameters", group, f"{count:,}")
    return model


def _outputs_require_grad(module, inputs, output):
    output.requires_grad_(True)


def hook_language_inputs(base) -> None:
    """Input-gradient hook on the language model's token embeddings alone (peft re-adds transformers' hooks on
    every embedding when it wraps a checkpointed model; those are removed first). The image features need none:
    the trained projector makes them require grad, and the frozen tower before it needs no backward at all."""
    base.disable_input_require_grads()
    base._require_grads_hooks = [base.get_input_embeddings().register_forward_hook(_outputs_require_grad)]


def checkpoint_language_model_only(model) -> None:
    """The frozen tower keeps nothing for backward: checkpointing its layers would only add bookkeeping."""
    for name, module in model.named_modules():
        if "vision_tower" in name and getattr(module, "gradient_checkpointing", False):
            module.gradient_checkpointing = False


def compile_language_model(model) -> int:
    """torch.compile each decoder layer of the language model in place (regional compilation: one small graph
    reused by every layer, compiled in seconds; the whole LLaVA forward would break its graph at the image
    merge). Returns how many layers were compiled."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for n, m in model.named_modules()
              if isinstance(m, GradientCheckpointingLayer) and "vision_tower" not in n]
    for layer in layers:
        layer.compile()
    log.info("torch.compile: %d language-model decoder layers", len(layers))
    return len(layers)


def cast_trainable_fp32(model) -> None:
    """What trains is fp32 (Adam updates at the projector's 2e-5 vanish in 16-bit); the frozen base keeps its
    loaded dtype. Norms need no upcast: Llama's RMSNorm and CLIP's LayerNorm already reduce in fp32 inside, and
    an fp32 norm weight would only promote the residual stream after it to fp32."""
    import torch

    for param in model.parameters():
        if param.requires_grad and param.dtype in (torch.bfloat16, torch.float16):
            param.data = param.data.float()


def cast_projector_inputs(model) -> None:
    """The trained projector copy (fp32) casts its input to its own dtype, so a 16-bit tower feeds it without
    autocast too (generation after training, CPU runs); transformers casts its output back for the LM."""
    for name, module in model.named_modules():
        # peft's trained copy, or (peft.method=none) the base's own projector when it trains in place.
        own = name.endswith(PROJECTOR) and all(p.requires_grad for p in module.parameters())
        if name.endswith(f"{PROJECTOR}.modules_to_save.default") or own:
            module.register_forward_pre_hook(_cast_input_to_weight_dtype)


def _cast_input_to_weight_dtype(module, args):
    dtype = next(module.parameters()).dtype
    return tuple(a.to(dtype) if hasattr(a, "dtype") and a.is_floating_point() else a for a in args)


def train_projector_only(model):
    """peft.method=none (LLaVA's stage 1): no adapter; the base's own projector trains, everything else frozen."""
    for name, param in model.named_parameters():
        param.requires_grad_(is_projector(name))
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
    if is_projector(name):
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
            (projector if is_projector(name) else adapters).append(param)
    # Named, so that a resume with a new rate for one of them finds it (lora_llava/train/resume.py).
    groups = [{"name": "adapters", "params": adapters, "lr": learning_rate, "weight_decay": weight_decay}] \
        if adapters else []
    if projector:
        groups.append({"name": "projector", "params": projector, "lr": projector_learning_rate,
                       "weight_decay": weight_decay})
    return groups


# vLLM's LLaVA names its language model `language_model.model.*` where transformers 5 says `model.language_model.*`
# (vllm/model_executor/models/llava.py, hf_to_vllm_mapper). Newer vLLM maps LoRA tensor names through that mapper,
# older releases take them as they are: vLLM's own names load in both.
VLLM_LANGUAGE_MODEL = ("model.language_model.", "language_model.model.")


def vllm_lora_name(peft_key: str) -> str | None:
    """A peft LoRA tensor name in vLLM's module names, or None when it is outside the language model."""
    prefix = "base_model.model."
    ours, theirs = VLLM_LANGUAGE_MODEL
    inner = peft_key.removeprefix(prefix)
    if not inner.startswith(ours):
        return None
    return prefix + theirs + inner[len(ours):]

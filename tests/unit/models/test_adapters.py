"""Which parameters train: LoRA on the language model and the projector; never the vision tower."""

import pytest
import torch

from lora_llava.models.adapters import apply_adapters, optimizer_param_groups, trainable_by_group
from lora_llava.models.load import build_model_and_processor
from tests.conftest import smoke_config


def _adapted(*overrides):
    cfg = smoke_config(*overrides)
    model, _ = build_model_and_processor(cfg.model, cfg.quant)
    return apply_adapters(model, cfg.peft, False, False), cfg


def test_lora_on_language_model_projector_trainable_tower_frozen():
    model, _ = _adapted()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    assert not [n for n in trainable if "vision_tower" in n]
    assert all("lora_" in n or "multi_modal_projector" in n for n in trainable)
    lora_modules = {n.rsplit(".lora_", 1)[0] for n in trainable if "lora_" in n}
    assert all("language_model" in n for n in lora_modules)
    assert any(n.endswith("q_proj") for n in lora_modules) and any(n.endswith("down_proj") for n in lora_modules)
    # base weights are frozen, including the original projector kept beside its trained copy
    assert all(not p.requires_grad for n, p in model.named_parameters() if "base_layer" in n)
    groups = trainable_by_group(model)
    assert set(groups) == {"lora", "projector"}


def test_scope_all_reaches_the_vision_tower_only_when_asked():
    model, _ = _adapted("peft.scope=all", "peft.target_modules=[q_proj,v_proj]")
    assert any("vision_tower" in n and "lora_" in n for n, _ in model.named_parameters())


def test_projector_has_its_own_learning_rate():
    model, _ = _adapted()
    groups = optimizer_param_groups(model, 2e-4, 2e-5, 0.0)
    assert [g["lr"] for g in groups] == [2e-4, 2e-5]
    projector_ids = {id(p) for p in groups[1]["params"]}
    names = [n for n, p in model.named_parameters() if id(p) in projector_ids]
    assert names and all("multi_modal_projector" in n for n in names)


@pytest.mark.parametrize("option", ["peft.use_dora=true", "peft.use_rslora=true"])
def test_dora_and_rslora_apply(option):
    model, _ = _adapted(option)
    config = model.peft_config["default"]
    assert config.use_dora or config.use_rslora
    assert any("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    assert torch.isfinite(next(p for p in model.parameters() if p.requires_grad)).all()


def test_checkpointing_and_trainer_args_raise_no_deprecation_warnings(tmp_path):
    import warnings

    from lora_llava.train.stage import build_sft_config

    cfg = smoke_config()
    model, _ = build_model_and_processor(cfg.model, cfg.quant)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adapted = apply_adapters(model, cfg.peft, quantized=False, gradient_checkpointing=True)
        args = build_sft_config(cfg.train, tmp_path, torch.float32, has_eval=False)
    assert adapted.base_model.model.is_activation_checkpointing and not args.activation_checkpointing
    assert not [w for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))
                and "checkpointing" in str(w.message)], [str(w.message) for w in caught]

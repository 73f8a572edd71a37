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


@pytest.mark.parametrize("family", ["tiny", "tiny-next", "tiny-onevision"])
def test_lora_on_language_model_projector_trainable_tower_frozen(family):
    model, _ = _adapted(f"model={family}")
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


def _image_batch(processor, n=4):
    from lora_llava.data import load_splits
    from lora_llava.data.collate import Collator

    return Collator(processor)(load_splits(smoke_config().data)["train"][:n])


def _tower_backward_calls(model) -> list:
    """Backward hooks on the vision tower: each call is a gradient reaching it."""
    calls = []
    for name, module in model.named_modules():  # tensor-output modules: the tower itself returns a ModelOutput
        if "vision_tower" in name and isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            module.register_full_backward_hook(lambda module, grad_in, grad_out: calls.append(module))
    assert calls == [] and any("vision_tower" in n for n, _ in model.named_modules())
    return calls


def test_with_checkpointing_no_gradient_reaches_the_vision_tower(tiny_model_and_processor):
    import copy

    from lora_llava.models.adapters import hook_language_inputs

    base, processor = tiny_model_and_processor
    cfg = smoke_config()
    model = apply_adapters(copy.deepcopy(base), cfg.peft, False, gradient_checkpointing=True).train()
    calls = _tower_backward_calls(model)
    model(**_image_batch(processor)).loss.backward()
    assert not calls, "backward ran through the frozen CLIP tower"
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n or "projector" in n)
    hooked = [n for n, m in model.named_modules()
              if any("require_grad" in getattr(h, "__name__", "") for h in m._forward_hooks.values())]
    assert hooked == ["base_model.model.model.language_model.embed_tokens"], hooked

    # The same check catches transformers' own hooks, which include CLIP's patch embedding.
    model.get_base_model().enable_input_require_grads()
    model(**_image_batch(processor)).loss.backward()
    assert calls, "the test cannot see a gradient in the tower"
    hook_language_inputs(model.get_base_model())  # and ours put it right again
    calls.clear()
    model(**_image_batch(processor)).loss.backward()
    assert not calls


def test_frozen_base_stays_16_bit_and_only_what_trains_is_fp32():
    """peft's prepare_model_for_kbit_training would upcast the tower, embeddings and lm_head to fp32."""
    cfg = smoke_config("model.dtype=bfloat16", "quant=nf4")
    model, processor = build_model_and_processor(cfg.model, cfg.quant)
    model = apply_adapters(model, cfg.peft, True, gradient_checkpointing=True).train()
    dtypes = {n: p.dtype for n, p in model.named_parameters() if type(p).__name__ != "Params4bit"}
    assert all(d == torch.float32 for n, d in dtypes.items() if "lora_" in n or "modules_to_save" in n)
    frozen = {n: d for n, d in dtypes.items() if "lora_" not in n and "modules_to_save" not in n}
    assert set(frozen.values()) == {torch.bfloat16}, "tower, embeddings, norms, lm_head: 16-bit"
    assert any("vision_tower" in n for n in frozen) and any("lm_head" in n for n in frozen)
    loss = model(**_image_batch(processor)).loss  # a 16-bit tower feeds the fp32 projector without autocast
    loss.backward()
    assert torch.isfinite(loss)
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

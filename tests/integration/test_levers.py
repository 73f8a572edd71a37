"""The optional GPU levers: each behind a key, off by default (none can be measured on this CPU-only machine),
refused at start with the key named when its package or kernel is missing, and working where the CPU can run it
(padding-free rows through transformers' packed-sequence path, 8-bit paged AdamW, regional torch.compile)."""

import copy

import pytest
import torch

from lora_llava.errors import ConfigError
from lora_llava.run import run
from tests.conftest import smoke_config

SMALL = ["stages=[train]", "data.synthetic.n_train=16", "data.synthetic.n_eval=4", "train.batch_size=4",
         "train.max_steps=2", "train.eval_steps=null"]


def test_levers_are_off_by_default():
    for recipe in ("smoke", "scienceqa", "custom_image_qa"):
        from lora_llava.config import compose

        cfg = compose(recipe)
        assert not (cfg.train.padding_free or cfg.train.use_liger_kernel or cfg.train.compile), recipe
        assert cfg.model.attn_implementation in ("sdpa", None) and "8bit" not in cfg.train.optim


@pytest.mark.parametrize("overrides, named", [
    (["model.attn_implementation=flash_attention_2"], "model.attn_implementation=flash_attention_2 needs the flash_attn"),
    (["model.attn_implementation=flash_attention_3"], "needs the flash_attn_interface package"),
    (["model.attn_implementation=flash"], "model.attn_implementation='flash' is not one of"),
    (["train.use_liger_kernel=true"], "train.use_liger_kernel=True needs the liger_kernel package"),
    (["train.padding_free=true"], "train.padding_free=true needs model.attn_implementation=flash_attention_2"),
    (["train.optim=paged_adamw_9bit"], "train.optim='paged_adamw_9bit' is not an optimizer"),
])
def test_a_lever_that_cannot_run_stops_at_start_naming_its_key(overrides, named, tmp_path, monkeypatch):
    from lora_llava.models import load

    def never(*args, **kwargs):
        raise AssertionError("a model or processor was loaded before the check")

    monkeypatch.setattr(load, "build_model_and_processor", never)
    monkeypatch.setattr(load, "load_processor", never)
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace("[", r"\[")):
        run(smoke_config(*SMALL, *overrides), tmp_path)


def test_padding_free_rows_give_the_padded_batchs_loss_and_gradients(tiny_model_and_processor):
    """One packed row with restarting positions and no attention mask: transformers reads the boundaries from the
    positions (cu_seqlens for flash-attention; a block-diagonal mask on this CPU's SDPA, used here for the check)."""
    from lora_llava.data import load_splits
    from lora_llava.data.collate import ANSWER_POSITIONS, Collator
    from lora_llava.train.loss import supervised_logits, token_loss

    model, processor = tiny_model_and_processor
    model = copy.deepcopy(model).train()
    samples = load_splits(smoke_config().data)["train"][:4]
    padded = Collator(processor, with_answer_positions=True)(samples)
    packed = Collator(processor, with_answer_positions=True, padding_free=True)(samples)
    assert packed["input_ids"].shape == (1, int(padded["attention_mask"].sum())) and "attention_mask" not in packed
    assert (packed["position_ids"] == 0).sum() == 4
    assert packed[ANSWER_POSITIONS].shape[0] == 1
    losses, grads = [], []
    for batch in (padded, packed):
        model.zero_grad()
        loss = token_loss(*supervised_logits(model, batch))
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_liger_goes_through_the_trainers_own_switch_without_its_fused_loss(tmp_path):
    from lora_llava.train.stage import build_sft_config

    cfg = smoke_config("train.use_liger_kernel=true")
    args = build_sft_config(cfg.train, tmp_path, torch.float32, has_eval=False)
    assert args.use_liger_kernel
    assert args.liger_kernel_config == {"rms_norm": True, "swiglu": True, "rope": True, "cross_entropy": False,
                                        "fused_linear_cross_entropy": False}
    assert not build_sft_config(smoke_config().train, tmp_path, torch.float32, has_eval=False).use_liger_kernel


def test_paged_adamw_8bit_trains_the_adapters_and_the_projector_at_its_own_rate(tmp_path, monkeypatch):
    from lora_llava.train.trainer import LlavaSFTTrainer

    optimizers = []
    create = LlavaSFTTrainer.create_optimizer

    def capture(self, model=None):
        optimizers.append(create(self, model))
        return optimizers[-1]

    monkeypatch.setattr(LlavaSFTTrainer, "create_optimizer", capture)
    model = run(smoke_config(*SMALL, "train.optim=paged_adamw_8bit", "train.projector_learning_rate=1e-4"),
                tmp_path).model
    optimizer = optimizers[0]
    # transformers builds it as bitsandbytes' AdamW with 8-bit state, paged.
    assert type(optimizer).__module__.startswith("bitsandbytes") and optimizer.is_paged
    assert optimizer.args.optim_bits == 8
    assert [g["initial_lr"] for g in optimizer.param_groups] == [3e-3, 1e-4]
    assert all(torch.isfinite(p).all() for p in model.parameters() if p.requires_grad)


@pytest.mark.slow  # inductor compiles the decoder layers with the machine's C++ compiler: 137 s here
def test_compile_compiles_the_language_models_decoder_layers_and_keeps_the_loss(tiny_model_and_processor):
    from lora_llava.data import load_splits
    from lora_llava.data.collate import Collator
    from lora_llava.models.adapters import apply_adapters, compile_language_model

    base, processor = tiny_model_and_processor
    cfg = smoke_config()
    batch = Collator(processor)(load_splits(cfg.data)["train"][:4])
    losses = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = apply_adapters(copy.deepcopy(base), cfg.peft, False, False).eval()
        if compiled:
            assert compile_language_model(model) == base.config.text_config.num_hidden_layers
        loss = model(**batch).loss
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)

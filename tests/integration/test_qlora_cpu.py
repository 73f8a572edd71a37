"""QLoRA on CPU: bitsandbytes 4-bit NF4 layers in the language model only, and a training step stays finite."""

import torch

from lora_llava.data import load_splits
from lora_llava.data.collate import Collator
from lora_llava.models.adapters import apply_adapters
from lora_llava.models.load import build_model_and_processor
from tests.conftest import smoke_config


def test_qlora_quantizes_language_model_only_and_trains():
    cfg = smoke_config("quant=nf4")
    model, processor = build_model_and_processor(cfg.model, cfg.quant)
    kinds = {name: type(m).__name__ for name, m in model.named_modules()}
    four_bit = [n for n, k in kinds.items() if k == "Linear4bit"]
    assert four_bit and all("language_model" in n for n in four_bit)
    assert not [n for n in four_bit if "vision_tower" in n or "multi_modal_projector" in n or "lm_head" in n]
    assert model.config.quantization_config.bnb_4bit_quant_type == "nf4"
    assert model.config.quantization_config.bnb_4bit_use_double_quant

    model = apply_adapters(model, cfg.peft, quantized=True, gradient_checkpointing=True)
    model.train()
    batch = Collator(processor)(load_splits(cfg.data)["train"][:4])
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in params)
    assert any(not torch.equal(a, b) for a, b in zip(before, params))


def test_qlora_through_the_trainer_keeps_trainable_weights_fp32(tmp_path):
    """TRL casts a quantized model's trainable weights to bf16; at the projector's small learning rate most
    updates would vanish. Ours stay fp32 and the projector moves."""
    from lora_llava.train.stage import train

    cfg = smoke_config("quant=nf4", "train.max_steps=3", "train.eval_steps=null", "train.projector_learning_rate=2e-5")
    base, _ = build_model_and_processor(cfg.model, smoke_config().quant)
    before = {n: p.detach().clone() for n, p in base.named_parameters() if "multi_modal_projector" in n}
    model, _ = train(cfg, tmp_path)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values())
    moved = [n for n, p in trainable.items() if "multi_modal_projector" in n
             and not torch.equal(p.detach(), before[n.replace("base_model.model.", "").replace(
                 ".modules_to_save.default", "")])]
    assert moved, "the projector did not train"

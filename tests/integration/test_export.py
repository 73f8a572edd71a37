"""The adapter folder is complete and reloads as the trained model; merged/ matches adapter-on-base and is
checked by verification.json; `stages=[export] adapter=PATH` works without training."""

import json

import pytest
import torch
from safetensors import safe_open

from lora_llava.data import load_splits
from lora_llava.data.collate import Collator
from lora_llava.eval.generate import generate
from lora_llava.run import run
from tests.conftest import smoke_config

PROJECTOR = "multi_modal_projector"


def projector_weights(model) -> dict[str, torch.Tensor]:
    """The projector's effective weights (the trained copy under peft, the only copy in a plain model)."""
    return {n.split(PROJECTOR)[1].replace(".modules_to_save.default", ""): p.detach()
            for n, p in model.named_parameters() if PROJECTOR in n and "original_module" not in n}


def test_adapter_folder_is_complete(trained_smoke):
    from transformers import AutoProcessor

    adapter = trained_smoke.run_dir / "adapter"
    names = {p.name for p in adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "processor_config.json",
            "tokenizer.json", "tokenizer_config.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))]
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["peft_type"]) == (16, 32, "LORA")
    # a regex scoped to the language model, with the CLIP tower excluded
    assert "q_proj" in config["target_modules"] and "vision_tower" in config["target_modules"]
    assert config["modules_to_save"] == [PROJECTOR]
    with safe_open(adapter / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert any("lora_A" in k for k in keys) and any("lora_B" in k for k in keys)
    assert any(PROJECTOR in k for k in keys), "the trained projector must travel with the adapter"
    assert not [k for k in keys if "vision_tower" in k]
    assert AutoProcessor.from_pretrained(adapter).tokenizer.pad_token is not None


def test_reloaded_adapter_gives_the_trained_answers_and_projector(trained_smoke):
    from peft import PeftModel

    from lora_llava.models.load import build_model_and_processor

    cfg = smoke_config()
    base, processor = build_model_and_processor(cfg.model, cfg.quant)
    base_projector = {k: v.clone() for k, v in projector_weights(base).items()}
    reloaded = PeftModel.from_pretrained(base, str(trained_smoke.run_dir / "adapter"))
    test = load_splits(cfg.data)["test"][:24]
    trained_answers = generate(trained_smoke.model, trained_smoke.processor, test, batch_size=24,
                               max_new_tokens=6)
    assert generate(reloaded, processor, test, batch_size=24, max_new_tokens=6) == trained_answers
    trained, loaded = projector_weights(trained_smoke.model), projector_weights(reloaded)
    assert trained.keys() == loaded.keys() == base_projector.keys() and trained
    for name in trained:
        assert torch.equal(trained[name], loaded[name]), name
        assert not torch.allclose(base_projector[name], loaded[name]), f"{name} is the base's, not trained"


@pytest.fixture(scope="module")
def merged_run(trained_smoke, tmp_path_factory):
    """stages=[export] adapter=<trained run>/adapter export.merge=true, fp32, small shards: no training."""
    cfg = smoke_config("stages=[export]", f"adapter={trained_smoke.run_dir / 'adapter'}", "export.merge=true",
                       "export.dtype=float32", "export.max_shard_size=300KB")
    return run(cfg, tmp_path_factory.mktemp("merge_run"))


def test_merged_model_equals_adapter_on_base(merged_run, trained_smoke):
    from peft import PeftModel
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from lora_llava.models.load import build_model_and_processor

    merged_dir = merged_run.run_dir / "merged"
    report = json.loads((merged_dir / "verification.json").read_text())
    assert report["passed"] is True and report["max_abs_diff"] < 1e-4 and report["dtype"] == "float32"
    assert report["quantized_layers"] == report["lora_layers"] == 0
    assert len(report["shards"]) > 1 and (merged_dir / "model.safetensors.index.json").is_file()
    assert (merged_dir / "generation_config.json").is_file()
    # independently of verification.json: real held-out questions, merged vs adapter on a fresh base
    merged = LlavaForConditionalGeneration.from_pretrained(merged_dir).eval()
    batch = Collator(AutoProcessor.from_pretrained(merged_dir))(load_splits(smoke_config().data)["test"][:8])
    batch.pop("labels")
    cfg = smoke_config()
    base, _ = build_model_and_processor(cfg.model, cfg.quant)
    adapted = PeftModel.from_pretrained(base, str(trained_smoke.run_dir / "adapter")).eval()
    with torch.no_grad():
        diff = (merged(**batch).logits - adapted(**batch).logits).abs().max().item()
    assert diff < 1e-4
    trained = projector_weights(trained_smoke.model)
    assert all(torch.equal(trained[k], v) for k, v in projector_weights(merged).items())


def test_merged_folder_has_a_card_and_the_adapter_card_has_the_eval(merged_run, trained_smoke):
    from huggingface_hub import ModelCard

    merged_card = ModelCard.load(merged_run.run_dir / "merged" / "README.md")
    assert merged_card.data.library_name == "transformers"
    adapter_card = ModelCard.load(merged_run.run_dir / "adapter" / "README.md")
    accuracy = json.loads((trained_smoke.run_dir / "eval" / "metrics.json").read_text())["accuracy"]
    assert f"| accuracy | {accuracy:.4f} |" in adapter_card.text


def test_a_failed_merge_check_leaves_the_earlier_merged_folder_untouched(trained_smoke, tmp_path):
    cfg = smoke_config(*cfg_overrides(trained_smoke))
    run(smoke_config(*[o for o in cfg_overrides(trained_smoke) if "tolerance" not in o]), tmp_path)
    earlier = {p.name: p.read_bytes() for p in (tmp_path / "merged").iterdir()}
    with pytest.raises(RuntimeError, match="merged model check failed.*export.tolerance"):
        run(cfg, tmp_path)
    # The failed export is left in its own folder for a look; the earlier merged/ is untouched, never mixed.
    assert json.loads((tmp_path / ".merged-incomplete" / "verification.json").read_text())["passed"] is False
    assert {p.name: p.read_bytes() for p in (tmp_path / "merged").iterdir()} == earlier
    assert json.loads(earlier["verification.json"])["passed"] is True


def cfg_overrides(trained_smoke):
    return ["stages=[export]", f"adapter={trained_smoke.run_dir / 'adapter'}", "export.merge=true",
            "export.dtype=float32", "export.tolerance=1e-12"]


def test_export_never_writes_over_another_runs_adapter(trained_smoke, tmp_path):
    from lora_llava.rundir import RunDirError

    other = tmp_path / "other" / "adapter"
    other.mkdir(parents=True)
    (other / "adapter_config.json").write_text("{}")
    (other / "adapter_model.safetensors").write_bytes(b"another run's weights")
    with pytest.raises(RunDirError, match="already holds an adapter"):
        run(smoke_config("stages=[export]", f"adapter={trained_smoke.run_dir / 'adapter'}"), tmp_path / "other")
    assert (other / "adapter_model.safetensors").read_bytes() == b"another run's weights"


def qlora_adapter(cfg, out_dir):
    """A few AdamW steps of LoRA + projector on the 4-bit (NF4) tiny model, saved as the train stage saves it.
    (Trained by hand: TRL casts QLoRA's trainable weights to bf16, which CPU training without autocast
    rejects.)"""
    from lora_llava.models.adapters import apply_adapters
    from lora_llava.models.load import build_model_and_processor, save_adapter

    model, processor = build_model_and_processor(cfg.model, cfg.quant)
    model = apply_adapters(model, cfg.peft, quantized=True, gradient_checkpointing=False).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = Collator(processor)(load_splits(cfg.data)["train"][:8])
    for _ in range(3):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert any(type(m).__name__ == "Linear4bit" for m in model.modules())
    return save_adapter(model, processor, out_dir, cfg)


def test_qlora_adapter_merges_into_16bit(tmp_path):
    """An adapter trained on the NF4 base merges into a bf16 base, no Linear4bit left; verification.json."""
    from transformers import LlavaForConditionalGeneration

    from lora_llava.models.load import build_model_and_processor

    adapter = qlora_adapter(smoke_config("quant=nf4"), tmp_path / "qlora_adapter")
    cfg = smoke_config("quant=nf4", "stages=[export]", f"adapter={adapter}", "export.merge=true",
                       "export.dtype=bfloat16")
    run(cfg, tmp_path / "run")
    merged_dir = tmp_path / "run" / "merged"
    report = json.loads((merged_dir / "verification.json").read_text())
    assert report["trained_with_quant"] == "nf4" and report["dtype"] == "bfloat16"
    assert report["quantized_layers"] == 0 and report["lora_layers"] == 0 and report["passed"] is True
    assert "quantization_config" not in json.loads((merged_dir / "config.json").read_text())
    merged = LlavaForConditionalGeneration.from_pretrained(merged_dir)
    assert not [n for n, m in merged.named_modules() if type(m).__name__ in ("Linear4bit", "Linear8bitLt")]
    assert {p.dtype for p in merged.parameters()} == {torch.bfloat16}
    base, _ = build_model_and_processor(cfg.model, None, dtype=torch.bfloat16)
    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(dict(merged.named_parameters())[name], dict(base.named_parameters())[name])


def test_export_from_a_checkpoint_folder_without_training(trained_smoke, tmp_path):
    checkpoint = next((trained_smoke.run_dir / "checkpoints").glob("checkpoint-*"))
    run(smoke_config("stages=[export]", f"adapter={checkpoint}"), tmp_path)
    names = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "processor_config.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth")) or n == "trainer_state.json"]
    with safe_open(tmp_path / "adapter" / "adapter_model.safetensors", "pt") as a, \
            safe_open(checkpoint / "adapter_model.safetensors", "pt") as b:
        assert set(a.keys()) == set(b.keys())


def test_pickled_adapter_is_refused(tmp_path):
    source = tmp_path / "old_adapter"
    source.mkdir()
    (source / "adapter_config.json").write_text("{}")
    (source / "adapter_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="adapter_model.bin, a pickle"):
        run(smoke_config("stages=[export]", f"adapter={source}"), tmp_path / "run")

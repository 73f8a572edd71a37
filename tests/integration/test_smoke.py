"""The smoke recipe end to end: images reach the language model, the run directory has PRODUCT.md's layout,
and the saved adapter reproduces the trained model."""

import json

import torch
from PIL import Image

from lora_llava.data import load_splits
from lora_llava.data.collate import Collator
from lora_llava.data.samples import Sample
from lora_llava.eval.generate import generate
from lora_llava.eval.scoring import score
from tests.conftest import smoke_config


def test_run_directory_layout(trained_smoke):
    run = trained_smoke.run_dir
    for path in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "adapter/README.md",
                 "adapter/processor_config.json", "adapter/tokenizer.json",
                 "eval/predictions.jsonl", "eval/metrics.json", "eval/report.md"):
        assert (run / path).is_file(), path
    assert list((run / "checkpoints").glob("checkpoint-*/adapter_model.safetensors"))


def test_images_reach_the_language_model(trained_smoke):
    """Held-out accuracy on image-only questions is high; the same model fed blank images is near chance."""
    cfg = smoke_config()
    test = load_splits(cfg.data)["test"]
    model, processor = trained_smoke.model, trained_smoke.processor
    _, metrics = score("exact", test, generate(model, processor, test, batch_size=32, max_new_tokens=8))
    assert all(s.meta["image_only"] for s in test)
    assert metrics["accuracy"] >= 0.9

    blank = [Sample(s.id, s.turns, [Image.new("RGB", (32, 32), (245, 245, 245))], s.meta) for s in test]
    _, blind = score("exact", blank, generate(model, processor, blank, batch_size=32, max_new_tokens=8))
    # 6 colours or 4 places: chance is at most 1/4 per question; a model reading the pixels cannot be fooled
    assert blind["accuracy"] <= 0.35


def test_metrics_match_predictions(trained_smoke):
    rows = [json.loads(line) for line in (trained_smoke.run_dir / "eval/predictions.jsonl").open()]
    metrics = json.loads((trained_smoke.run_dir / "eval/metrics.json").read_text())
    assert metrics["n"] == len(rows)
    assert metrics["accuracy"] == sum(r["correct"] for r in rows) / len(rows)


def test_saved_adapter_reproduces_the_trained_model(trained_smoke):
    from peft import PeftModel

    from lora_llava.models.load import build_model_and_processor

    cfg = smoke_config()
    base, processor = build_model_and_processor(cfg.model, cfg.quant)
    reloaded = PeftModel.from_pretrained(base, str(trained_smoke.run_dir / "adapter")).eval()
    batch = Collator(processor)(load_splits(cfg.data)["test"][:8])
    batch.pop("labels")
    trained = trained_smoke.model.eval()
    with torch.no_grad():
        expected, actual = trained(**batch).logits, reloaded(**batch).logits
    assert torch.allclose(expected, actual, atol=1e-5)
    # and the projector is the trained one, not the base's
    fresh, _ = build_model_and_processor(cfg.model, cfg.quant)
    with torch.no_grad():
        assert not torch.allclose(fresh(**batch).logits, actual, atol=1e-3)

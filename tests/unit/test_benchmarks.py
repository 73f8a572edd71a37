"""The GPU benchmark's in-memory QLoRA build matches what from_pretrained + our BitsAndBytesConfig produce, its
rows have LLaVA's shape, and (slow) the whole script runs end to end on a CPU with tiny shapes."""

import argparse

import pytest
import torch

from tests.conftest import smoke_config


def _kinds(model):
    return {name: (type(m).__name__, getattr(getattr(m, "weight", None), "quant_type", None))
            for name, m in model.named_modules() if type(m).__name__ in ("Linear", "Linear4bit")}


def test_in_memory_nf4_build_matches_from_pretrained():
    from transformers import LlavaForConditionalGeneration

    from benchmarks.gpu import quantize_nf4
    from lora_llava.models.adapters import apply_adapters
    from lora_llava.models.load import build_model_and_processor, checkpoint_path

    cfg = smoke_config("quant=nf4")
    loaded, _ = build_model_and_processor(cfg.model, cfg.quant, torch.float32)
    built = quantize_nf4(LlavaForConditionalGeneration.from_pretrained(checkpoint_path(cfg.model)), torch.float32,
                         "cpu")
    assert _kinds(built) == _kinds(loaded)
    assert sum(p.numel() for p in built.parameters()) == sum(p.numel() for p in loaded.parameters())
    loaded, built = (apply_adapters(m, cfg.peft, True, True) for m in (loaded, built))
    trainable = {n: p.dtype for n, p in loaded.named_parameters() if p.requires_grad}
    assert trainable == {n: p.dtype for n, p in built.named_parameters() if p.requires_grad}
    assert loaded.is_activation_checkpointing and built.is_activation_checkpointing


def test_gpu_rows_are_llava_shaped():
    from benchmarks.gpu import make_rows, model_config

    config = model_config(argparse.Namespace(tiny=True))
    rows = make_rows(config, 2, 700)
    row = rows[0]
    assert row["input_ids"].shape == (700,) and (row["input_ids"] == config.image_token_index).sum() == 576
    assert (row["labels"] != -100).sum() == 2 and row["input_ids"][-1] == 2
    assert row["pixel_values"].shape == (3, 336, 336)


@pytest.mark.slow
def test_gpu_script_dry_runs_on_cpu(tmp_path, capsys):
    import json

    from benchmarks.gpu import main

    main(["--tiny", "--device", "cpu", "--seq", "640", "--steps", "1", "--warmup", "1", "--batches", "1",
          "--json", str(tmp_path / "gpu.json")])
    results = json.loads((tmp_path / "gpu.json").read_text())["results"]
    assert len(results) == 8 and all(r["tokens_per_s"] > 0 for r in results)
    assert "quant ckpt" in capsys.readouterr().out

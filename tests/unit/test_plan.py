"""The memory planner: exact parameter counts against the real (tiny) model, a monotone memory model, the
largest micro-batch at the budget's edge, the checkpointing choice, and the plan stage's output."""

import json

import pytest
import torch

from lora_llava.plan import (
    count_parameters,
    estimate_gb,
    largest_batch,
    make_plan,
    model_config,
    plan_before_training,
)
from tests.conftest import smoke_config


@pytest.fixture(scope="module")
def cfg():
    return smoke_config("plan.seq_len=64")


@pytest.fixture(scope="module")
def counts(cfg):
    return count_parameters(model_config(cfg.model), cfg.quant, cfg.peft)


def test_counts_match_the_model_and_its_adapters(cfg, counts, tiny_model_and_processor):
    import copy

    from lora_llava.models.adapters import apply_adapters, trainable_by_group

    model, _ = tiny_model_and_processor
    assert counts.total == sum(p.numel() for p in model.parameters())
    trainable = trainable_by_group(apply_adapters(copy.deepcopy(model), cfg.peft, False, False))
    assert counts.lora == trainable["lora"]
    assert counts.projector == trainable["projector"]


def test_quantizable_count_matches_what_bitsandbytes_packs():
    from lora_llava.models.load import build_model_and_processor

    cfg = smoke_config("quant=nf4")
    counts = count_parameters(model_config(cfg.model), cfg.quant, cfg.peft)
    model, _ = build_model_and_processor(cfg.model, cfg.quant, torch.float32)
    packed = sum(p.numel() for p in model.parameters() if type(p).__name__ == "Params4bit")
    assert counts.quantizable == 2 * packed  # two 4-bit weights per stored byte
    assert counts.quantizable + counts.frozen_other == counts.total


def test_memory_grows_with_batch_and_checkpointing_saves_activations(cfg, counts):
    one, two = estimate_gb(counts, cfg, 1, 512, False), estimate_gb(counts, cfg, 2, 512, False)
    assert two["activations"] > one["activations"] and two["weights"] == one["weights"]
    assert estimate_gb(counts, cfg, 2, 512, True)["activations"] < two["activations"]


def test_largest_batch_sits_at_the_budget_edge(cfg, counts):
    budget = 1.0 + sum(estimate_gb(counts, cfg, 1, 512, False).values())  # room for more rows
    best = largest_batch(counts, cfg, 512, False, budget)
    assert best > 1
    assert sum(estimate_gb(counts, cfg, best, 512, False).values()) <= budget
    assert sum(estimate_gb(counts, cfg, best + 1, 512, False).values()) > budget


def test_checkpointing_is_chosen_only_when_needed(capsys):
    auto = "train.gradient_checkpointing=null"  # the smoke recipe sets it off explicitly
    assert plan_before_training(smoke_config(auto, "plan.gpu_memory_gb=24")) is False
    assert "memory plan" in capsys.readouterr().out
    # 64 rows of 2048 tokens: ~3.9 GiB without checkpointing, ~3.0 GiB with it (CUDA overhead included).
    tight = smoke_config(auto, "plan.gpu_memory_gb=3.5", "plan.seq_len=2048", "train.batch_size=64")
    plan = make_plan(tight)
    assert plan.largest_batch["no checkpointing"] < 64 <= plan.largest_batch["checkpointing"]
    assert plan.checkpointing and plan.fits
    explicit = make_plan(smoke_config("train.gradient_checkpointing=false", "plan.gpu_memory_gb=3.5",
                                      "plan.seq_len=2048", "train.batch_size=64"))
    assert explicit.checkpointing is False and not explicit.fits  # an explicit choice wins, and is flagged


def test_plan_stage_prints_and_writes_the_plan(tmp_path, capsys):
    from lora_llava.run import run

    ctx = run(smoke_config("stages=[plan]"), tmp_path)
    written = json.loads((tmp_path / "plan.json").read_text())
    assert written["params"]["total"] == ctx.extra["plan"].params.total
    assert set(written["parts_gb"]) == {"weights", "adapters + optimizer", "activations", "logits", "CUDA overhead"}
    assert "fits in 24 GiB" in capsys.readouterr().out

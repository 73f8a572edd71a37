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


def _lengths(tokens, images=None, answers=None):
    from lora_llava.data.lengths import Lengths

    return Lengths(tokens=list(tokens), answer_tokens=list(answers or [2] * len(tokens)),
                   images=list(images if images is not None else [1] * len(tokens)))


def test_the_widest_micro_batch_is_batch_rows_padded_to_the_longest_row():
    lengths = _lengths([100, 700, 650, 40, 1112], images=[0, 1, 1, 0, 1], answers=[1, 2, 2, 1, 3])
    assert lengths.longest_batch(4) == {"rows": 4, "width": 1112, "answer_tokens": 3, "images_per_row": 1}
    assert lengths.longest_batch(8)["rows"] == 5  # never more rows than samples
    summary = lengths.summary()
    assert summary["tokens"] == {"min": 40, "median": 650, "p95": 1112, "max": 1112}
    assert summary["tokens_text_rows"]["max"] == 100 and summary["with_image"] == 3


def test_the_plan_is_sized_from_the_longest_row_not_data_max_length(counts):
    cfg = smoke_config("data.max_length=2048", "train.batch_size=4", "plan.gpu_memory_gb=24")
    measured = make_plan(cfg, counts, lengths=_lengths([300, 512, 90]))
    assert (measured.seq_len, measured.seq_from) == (512, "the longest training row")
    assert measured.parts_gb["activations"] == pytest.approx(estimate_gb(counts, cfg, 4, 512, False)["activations"],
                                                            abs=1e-3)
    by_config = make_plan(cfg, counts)
    assert (by_config.seq_len, by_config.seq_from) == (2048, "data.max_length")
    assert measured.parts_gb["activations"] < by_config.parts_gb["activations"]
    explicit = make_plan(smoke_config("plan.seq_len=64"), counts, lengths=_lengths([512]))
    assert (explicit.seq_len, explicit.seq_from, explicit.lengths) == (64, "plan.seq_len", None)


def test_measured_lengths_turn_checkpointing_off_where_the_longest_batch_fits(counts):
    auto = ["train.gradient_checkpointing=null", "data.max_length=2048", "train.batch_size=64"]
    # A budget between the 512-token batch without checkpointing and the 2048-token one without it.
    budget = sum(estimate_gb(counts, smoke_config(*auto), 64, 512, False).values()) + 0.01
    assert sum(estimate_gb(counts, smoke_config(*auto), 64, 2048, False).values()) > budget
    cfg = smoke_config(*auto, f"plan.gpu_memory_gb={budget}")
    assert make_plan(cfg, counts).checkpointing is True
    from_data = make_plan(cfg, counts, lengths=_lengths([512] + [100] * 99))
    assert from_data.checkpointing is False and from_data.fits


def test_measure_gives_the_collators_lengths_and_counts_what_it_refuses(tiny_model_and_processor):
    from lora_llava.data import load_splits
    from lora_llava.data.collate import Collator
    from lora_llava.data.lengths import measure

    _, processor = tiny_model_and_processor
    cfg = smoke_config()
    samples = load_splits(cfg.data)["train"][:20]
    exact = [len(Collator(processor).encode(s)["input_ids"]) for s in samples]
    lengths = measure(samples, processor, cfg.data)
    assert lengths.tokens == exact and lengths.images == [1] * 20 and min(lengths.answer_tokens) >= 1
    short = smoke_config(f"data.max_length={sorted(exact)[10]}").data
    clipped = measure(samples, processor, short)
    assert len(clipped.tokens) + len(clipped.refused) == 20 and clipped.refused
    assert all("exceed data.max_length" in reason for reason in clipped.refused.values())


def test_plan_stage_and_training_report_the_measured_lengths(tmp_path, capsys, tiny_model_and_processor):
    from lora_llava.data import load_splits
    from lora_llava.data.screen import screen
    from lora_llava.run import run

    run(smoke_config("stages=[plan]"), tmp_path)
    written = json.loads((tmp_path / "plan.json").read_text())
    assert written["seq_from"] == "the longest training row" and written["lengths"]["samples"] > 0
    assert written["seq_len"] == written["lengths"]["tokens"]["max"]
    assert "training rows measured" in capsys.readouterr().out
    cfg = smoke_config("plan.gpu_memory_gb=24")
    _, processor = tiny_model_and_processor
    screened = screen(load_splits(cfg.data)["train"][:8], cfg.data, processor, "train")
    plan_before_training(cfg, screened.lengths())
    assert "training rows measured: 8 " in capsys.readouterr().out
    plan_before_training(smoke_config("plan.gpu_memory_gb=24", "plan.from_data=false"), screened.lengths())
    assert "training rows measured" not in capsys.readouterr().out


def test_screening_gives_the_planner_the_lengths_measure_would(tiny_model_and_processor):
    """A training run plans from screening's counts instead of tokenizing every row a second time: they must be
    the lengths data/lengths.py measures, rejects counted as refused."""
    from lora_llava.data import load_splits
    from lora_llava.data.lengths import measure
    from lora_llava.data.screen import screen

    _, processor = tiny_model_and_processor
    samples = load_splits(smoke_config().data)["train"][:20]
    middle = sorted(measure(samples, processor, smoke_config().data).tokens)[10]
    for data in (smoke_config().data, smoke_config(f"data.max_length={middle}").data):
        measured, screened = measure(samples, processor, data), screen(samples, data, processor, "train").lengths()
        assert (screened.tokens, screened.answer_tokens, screened.images) == \
            (measured.tokens, measured.answer_tokens, measured.images)
        assert screened.refused.keys() == measured.refused.keys()
    assert measured.refused  # the short data.max_length refused some rows, so both branches were compared

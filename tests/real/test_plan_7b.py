"""The planner on the real LLaVA-1.5-7B config (../shared/data): exact parameter count, and the QLoRA estimate
for r=16, one 1k-token row with gradient checkpointing within 5-9 GB."""

import json

import pytest

GB = 1e9
GiB = 1024**3


@pytest.fixture(scope="module")
def qlora_7b(shared_data):
    from lora_llava.config import compose

    model_dir = shared_data / "llava-1.5-7b-hf"
    return compose("scienceqa", [f"model.path={model_dir}", "peft=lora", "peft.r=16", "peft.lora_alpha=32",
                                 "train.batch_size=1", "train.gradient_checkpointing=true", "plan.seq_len=1024",
                                 "plan.gpu_memory_gb=24"])


def test_parameter_count_is_exact(qlora_7b):
    from lora_llava.plan import count_parameters, model_config

    counts = count_parameters(model_config(qlora_7b.model), qlora_7b.quant, qlora_7b.peft)
    assert counts.total == 7_063_427_072
    # q,k,v,o (4096x4096) and gate, up, down (4096x11008) in each of 32 layers, at r=16
    assert counts.lora == 32 * 16 * (4 * (4096 + 4096) + 3 * (4096 + 11008))
    assert counts.quantizable == 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)


def test_qlora_7b_r16_one_1k_row_with_checkpointing_needs_5_to_9_gb(qlora_7b):
    from lora_llava.plan import make_plan

    plan = make_plan(qlora_7b)
    total_bytes = plan.total_gb * GiB
    assert 5 * GB <= total_bytes <= 9 * GB, plan.table()
    assert plan.fits and plan.checkpointing


def test_bf16_lora_7b_at_batch_8_needs_checkpointing_on_24gb(qlora_7b):
    from omegaconf import OmegaConf

    from lora_llava.plan import make_plan

    cfg = OmegaConf.merge(qlora_7b, {"quant": {"method": "none"}, "train": {"batch_size": 8,
                                                                            "gradient_checkpointing": None}})
    plan = make_plan(cfg)
    assert plan.recommend_checkpointing and plan.largest_batch["no checkpointing"] < 8


def test_the_gpu_benchmark_builds_the_exact_7b_shapes(shared_data):
    from transformers import AutoConfig

    from benchmarks.shapes import llava_15_7b_config

    ours, real = llava_15_7b_config(), AutoConfig.from_pretrained(shared_data / "llava-1.5-7b-hf")
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "rms_norm_eps", "max_position_embeddings"):
        assert getattr(ours.text_config, key) == getattr(real.text_config, key), key
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "image_size", "patch_size"):
        assert getattr(ours.vision_config, key) == getattr(real.vision_config, key), key
    assert ours.image_token_index == real.image_token_index
    assert ours.image_seq_length == real.image_seq_length == 576


def _plan_cli(shared_data, tmp_path, *overrides):
    """README's `python -m lora_llava recipe=scienceqa stages=[plan]`, with the shared local copies substituted
    for the Hub ids (the real LLaVA-1.5-7B config and processor, LLaVA's ScienceQA test JSON as the training rows)."""
    import os
    import subprocess
    import sys

    sqa = shared_data / "scienceqa"
    args = ["recipe=scienceqa", "stages=[plan]", f"model.path={shared_data / 'llava-1.5-7b-hf'}",
            f"data.path={sqa / 'llava_test_CQM-A.json'}", f"data.image_root={sqa / 'images' / 'test'}",
            "data.train_split=test", "data.eval_split=null", f"hydra.run.dir={tmp_path}", *overrides]
    proc = subprocess.run([sys.executable, "-m", "lora_llava", *args], check=False, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, json.loads((tmp_path / "plan.json").read_text())


@pytest.mark.real
def test_scienceqa_plan_measures_the_real_lengths_and_drops_checkpointing_where_it_fits(shared_data, tmp_path):
    out, plan = _plan_cli(shared_data, tmp_path / "data", "train.batch_size=1", "plan.gpu_memory_gb=24")
    # All 4,241 test questions with the recipe's answer instruction appended (train.answer_suffix), measured with
    # the real processor: 576 image tokens per image row. Measured here: longest 1,127, p95 798.
    lengths = plan["lengths"]
    assert (lengths["samples"], lengths["with_image"], lengths["refused"]) == (4241, 2017, 0)
    assert lengths["tokens"]["max"] == plan["seq_len"] == 1127 and lengths["tokens"]["p95"] == 798
    assert lengths["tokens_image_rows"]["min"] > 576 > lengths["tokens_text_rows"]["max"]
    assert "micro-batch 1 x 1,127 tokens (the longest training row), gradient checkpointing off" in out
    assert not plan["checkpointing"] and plan["fits"]
    # Planned for data.max_length (2,048) instead, the same row does not fit without checkpointing.
    _, by_max = _plan_cli(shared_data, tmp_path / "max", "train.batch_size=1", "plan.gpu_memory_gb=24",
                          "plan.from_data=false")
    assert by_max["seq_len"] == 2048 and by_max["checkpointing"] and by_max["largest_batch"]["no checkpointing"] == 0


@pytest.mark.real
def test_our_kbit_casts_save_1_1_gib_at_7b(qlora_7b):
    """peft's prepare_model_for_kbit_training held every parameter outside the 4-bit linears in fp32; ours keep
    them 16-bit: 2 bytes less for each of the tower, projector, embeddings, lm_head and norms."""
    from lora_llava.plan import count_parameters, model_config

    counts = count_parameters(model_config(qlora_7b.model), qlora_7b.quant, qlora_7b.peft)
    assert counts.frozen_other == 7_063_427_072 - 6_476_005_376 == 587_421_696
    assert counts.frozen_other * 2 / GiB == pytest.approx(1.094, abs=1e-3)

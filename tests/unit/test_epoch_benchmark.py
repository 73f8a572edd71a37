"""benchmarks/epoch.py: the matched model's FLOP split is LLaVA-1.5-7B's, the subset keeps the length mix, the
synthesized rows have the lengths asked for, the vocabulary fold keeps image tokens and ignored labels, the memory
cap decides checkpointing, and (slow) the CPU and GPU paths run end to end."""

import json

import pytest
import torch

from benchmarks.matched import PARTS, Shape, llava_config, matched_shape, mix_stats, split
from benchmarks.shapes import llava_15_7b_config

# A ScienceQA-like mix: half image rows (576 + text), half short text-only rows.
MIX = [(576 + 40 + (i * 37) % 500, True) for i in range(50)] + [(30 + (i * 53) % 400, False) for i in range(50)]


def test_matched_model_splits_its_flops_like_7b():
    stats = mix_stats(MIX)
    want = split(Shape.of(llava_15_7b_config()), stats)
    shape = matched_shape(Shape.of(llava_15_7b_config()), stats)
    got = split(shape, stats)
    assert 0.01 < want["lm_head"] < 0.03  # the 7B head is ~2% of the forward, not the ~90% of the old toy model
    for part in ("lm_head", "decoder attention", "vision tower"):
        assert abs(got[part] - want[part]) / want[part] < 0.1, (part, got[part], want[part])
    assert abs(sum(got.values()) - 1) < 1e-9 and set(got) == set(PARTS)
    config = llava_config(shape, shape.vocab - 1, shape.vocab - 2)
    assert Shape.of(config) == shape and config.image_seq_length == 576


def test_7b_split_counts_every_parameter_once():
    """The MAC count per token of the decoder and head equals their parameter count (one MAC per weight)."""
    from transformers import LlavaForConditionalGeneration

    from benchmarks.matched import macs

    config = llava_15_7b_config()
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    lm = model.model.language_model
    linear = sum(p.numel() for n, p in lm.named_parameters() if n.endswith("proj.weight"))
    parts = macs(Shape.of(config), (1, 0, 0))  # one token, no image
    assert parts["decoder linears"] == linear and parts["lm_head"] == model.lm_head.weight.numel()


def test_pick_keeps_the_length_distribution():
    from benchmarks.mix import pick

    rows = pick(MIX, 20)
    assert len(rows) == 20 and sorted(rows) == rows
    mean = sum(n for n, _ in MIX) / len(MIX)
    assert abs(sum(n for n, _ in rows) / 20 - mean) / mean < 0.05
    assert 0.3 < sum(image for _, image in rows) / 20 < 0.7
    assert pick(MIX, 1000) == sorted(MIX)


def test_fold_maps_into_the_small_vocabulary():
    from benchmarks.epoch import Counted

    batch = {"input_ids": torch.tensor([[1, 32000, 32000, 500, 31999], [1, 7, 32001, 32001, 32001]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]),
             "labels": torch.tensor([[-100, -100, -100, 500, 31999], [-100, 7, -100, -100, -100]])}
    counted = Counted(lambda items: {k: v.clone() for k, v in batch.items()}, 252, 32000, 251)
    out = counted([])
    assert out["input_ids"].max() < 252 and (out["input_ids"] == 251).sum() == 2
    assert torch.equal(out["labels"] == -100, batch["labels"] == -100) and out["labels"].max() < 250
    assert (counted.tokens, counted.positions) == (7, 10)


def test_memory_cap_decides_our_checkpointing():
    from benchmarks.epoch import memory_plans

    roomy, tight = (memory_plans(llava_15_7b_config(), 1112, cap) for cap in (141.0, 24.0))
    assert not roomy["ours checkpointing"] and tight["ours checkpointing"]
    assert tight["trl (checkpointing)"] <= 24 < tight["ours without checkpointing"]
    with pytest.raises(SystemExit, match="TRL example's settings need"):
        memory_plans(llava_15_7b_config(), 1112, 8.0)


def test_the_7b_model_is_built_in_the_compute_dtype_whatever_its_config_json_says():
    """llava-1.5-7b-hf's config.json sets float16 on the text config, and transformers 5 builds the decoder in it:
    the GPU and dry-run models must be wholly in the arm's dtype (bf16 on a GPU, fp32 on a CPU)."""
    from types import SimpleNamespace

    from benchmarks.epoch import model_for, random_model

    shipped = llava_15_7b_config()
    shipped.text_config.dtype = torch.float16  # as the shared config.json has it
    for dry_run, want in ((True, torch.float32), (False, torch.bfloat16)):
        config, _, dtype = model_for(SimpleNamespace(gpu=True, dry_run=dry_run), shipped, MIX)
        model = random_model(config, dtype, "meta")
        assert dtype == want and {p.dtype for p in model.parameters()} == {want}


def test_profile_sorts_ops_by_kind():
    from benchmarks.epoch import kind_of

    assert [kind_of(f"aten::{op}") for op in ("mm", "addmm", "bernoulli_", "silu_backward", "mul",
                                              "_scaled_dot_product_flash_attention_for_cpu", "lerp_")] == \
        ["matmul", "matmul", "elementwise", "elementwise", "elementwise", "attention", "other"]


@pytest.mark.real
def test_scienceqa_mix_and_synthesized_lengths(shared_data, tmp_path):
    from benchmarks.mix import describe_mix, image_files, load_mix, pick, synthesize
    from benchmarks.workload import load_processor

    processor = load_processor(shared_data)
    mix = load_mix(type("A", (), {"lengths": None, "shared": shared_data})(), processor)
    assert len(mix) == 4241 and max(n for n, _ in mix) == 1112 and 0.45 < sum(i for _, i in mix) / 4241 < 0.5
    assert describe_mix(mix).startswith("4241 rows, 48% with an image")
    rows = pick(mix, 24)
    samples, error = synthesize(rows, processor, image_files(shared_data, tmp_path))
    assert error <= 2 and [bool(s.images) for s in samples] == [image for _, image in rows]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["--rows", "8", "--rounds", "1", "--ablations"], ["--dry-run"]],
                         ids=["cpu", "gpu-dry-run"])
def test_epoch_benchmark_runs_end_to_end(extra, tmp_path, capsys):
    from benchmarks.epoch import main

    main([*extra, "--json", str(tmp_path / "epoch.json")])
    result = json.loads((tmp_path / "epoch.json").read_text())
    assert all(r["seconds"] > 0 and r["steps"] >= 1 for arm in ("trl", "ours") for r in result["results"][arm])
    out = capsys.readouterr().out
    assert "round 1: trl" in out and "ours/TRL: median" in out and "lm_head" in out
    if "--ablations" in extra:  # one lever off at a time: grouping off draws TRL's batches, padding included
        rows = result["results"]
        assert "(ours, full logits)/TRL: median" in out
        assert rows["ours, random batches"][0]["positions"] == rows["trl"][0]["positions"] >= \
            rows["ours"][0]["positions"]


def test_without_shared_data_a_stand_in_processor_has_llavas_image_geometry():
    """A GPU machine has no ../shared: the benchmarks then use a stand-in processor (336 px, 576 tokens)."""
    from PIL import Image

    from benchmarks.workload import load_processor

    processor = load_processor(None)
    batch = processor(text=f"USER: {processor.image_token}\nWhat is it? ASSISTANT:",
                      images=Image.new("RGB", (500, 300)), return_tensors="pt")
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    assert batch["pixel_values"].shape[-2:] == (336, 336) and (batch["input_ids"] == image_id).sum() == 576


@pytest.mark.slow
def test_gpu_dry_run_without_shared_data_runs_from_a_lengths_file(tmp_path, capsys):
    """What a lent GPU machine does (it has no ../shared): the mix from a --write-lengths file, the stand-in
    processor, the 7B shapes from benchmarks/shapes.py."""
    from benchmarks.epoch import main

    (tmp_path / "mix.json").write_text(json.dumps(MIX))
    main(["--dry-run", "--lengths", str(tmp_path / "mix.json"), "--shared", str(tmp_path / "none"),
          "--json", str(tmp_path / "epoch.json")])
    out = capsys.readouterr().out
    assert "(--lengths)" in out and "7B shapes from benchmarks/shapes.py" in out
    result = json.loads((tmp_path / "epoch.json").read_text())["results"]
    assert all(r["steps"] >= 1 for arm in ("trl", "ours") for r in result[arm])

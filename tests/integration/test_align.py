"""recipe=align (LLaVA's stage 1) on the tiny model: only the projector trains, the run saves it as projector/,
and a later fine-tune (recipe=smoke model.projector=...) starts from it."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from lora_llava.config import compose
from lora_llava.models.adapters import apply_adapters
from lora_llava.models.load import build_model_and_processor
from lora_llava.run import run

# Small runs: 64 caption samples make 2 optimizer steps of 32 (the recipe's batch), each checkpointed.
ALIGN = ["train.report_to=[]", "data.synthetic.n_train=64", "data.synthetic.n_eval=8", "train.save_steps=1"]


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    return run(compose("align", ALIGN), tmp_path_factory.mktemp("align"))


def test_align_trains_the_projector_alone(aligned):
    trained = dict(aligned.model.named_parameters())
    assert {n for n, p in trained.items() if p.requires_grad} == {n for n in trained if ".multi_modal_projector." in n}
    cfg = compose("align", ALIGN)
    base, _ = build_model_and_processor(cfg.model, cfg.quant)
    after, before = aligned.model.state_dict(), base.state_dict()
    assert after.keys() == before.keys()
    frozen = [k for k in before if ".multi_modal_projector." not in k]
    changed = [k for k in before if not torch.equal(after[k], before[k])]
    assert frozen and all(torch.equal(after[k], before[k]) for k in frozen)  # bit-identical tower and LM
    assert sorted(changed) == sorted(set(before) - set(frozen))  # every projector tensor moved


def test_align_run_saves_the_projector_not_an_adapter(aligned):
    folder = aligned.run_dir / "projector"
    assert aligned.extra["projector_dir"] == folder and aligned.adapter_dir is None
    assert not (aligned.run_dir / "adapter").exists()
    info = json.loads((folder / "projector.json").read_text())
    weights = load_file(folder / "projector.safetensors")
    assert info["base"] == "tiny (seed 0)" and info["shapes"] == {k: list(v.shape) for k, v in weights.items()}
    state = aligned.model.state_dict()
    assert weights and all(torch.equal(v, state[k]) for k, v in weights.items())
    # checkpoints of an align run hold the projector, not a copy of the frozen base
    checkpoint = next((aligned.run_dir / "checkpoints").glob("checkpoint-*"))
    assert (checkpoint / "projector.safetensors").is_file() and not list(checkpoint.glob("model*.safetensors"))


def test_align_resumes_from_its_projector_checkpoint(aligned, tmp_path):
    """Resuming from step 1's checkpoint (projector and optimizer state only) ends where the whole run ended."""
    first = aligned.run_dir / "checkpoints" / "checkpoint-1"
    assert (first / "projector.safetensors").is_file() and (first / "optimizer.pt").is_file()
    resumed = run(compose("align", [*ALIGN, f"train.resume={first}"]), tmp_path / "resumed")
    assert [p.name for p in (resumed.run_dir / "checkpoints").glob("checkpoint-*")] == ["checkpoint-2"]  # step 2 only
    expected = load_file(aligned.run_dir / "projector" / "projector.safetensors")
    actual = load_file(resumed.run_dir / "projector" / "projector.safetensors")
    assert expected.keys() == actual.keys()
    assert all(torch.allclose(actual[k], expected[k], atol=1e-6) for k in expected)
    fresh = load_file(first / "projector.safetensors")
    assert any(not torch.equal(fresh[k], expected[k]) for k in expected)  # step 2 did change it


def test_a_fine_tune_starts_from_the_aligned_projector(aligned):
    """Before training, the fine-tune's trainable projector copy is the aligned projector, not the base's."""
    folder = aligned.run_dir / "projector"
    cfg = compose("smoke", ["train.report_to=[]", f"model.projector={folder}"])
    model, _ = build_model_and_processor(cfg.model, cfg.quant)
    model = apply_adapters(model, cfg.peft, False, False)
    saved = load_file(folder / "projector.safetensors")
    start = {n: p for n, p in model.named_parameters() if p.requires_grad and "multi_modal_projector" in n}
    assert len(start) == len(saved)
    for name, tensor in saved.items():
        suffix = name.split("multi_modal_projector.", 1)[1]
        copy = next(p for n, p in start.items() if n.endswith(suffix))
        assert torch.equal(copy, tensor)


def test_align_then_fine_tune_end_to_end(aligned, tmp_path):
    """A fine-tune from the aligned projector trains, evaluates and saves an adapter; a later eval of that adapter
    loads the aligned projector again. With peft.train_projector=false the aligned projector lives in the base
    alone, so the later eval can only match the run's own answers if model.projector is loaded."""
    from lora_llava.data import load_splits
    from lora_llava.data.collate import Collator
    from lora_llava.models.load import load_adapted

    folder = aligned.run_dir / "projector"
    overrides = ["train.report_to=[]", f"model.projector={folder}", "data.synthetic.n_train=64",
                 "data.synthetic.n_eval=8", "peft.train_projector=false"]
    ctx = run(compose("smoke", [*overrides, "train.max_steps=4", "train.eval_steps=null"]), tmp_path / "finetune")
    adapter = ctx.run_dir / "adapter"
    assert not [k for k in load_file(adapter / "adapter_model.safetensors") if "multi_modal_projector" in k]
    assert f"model.projector={folder}" in (adapter / "README.md").read_text()
    again = run(compose("smoke", [*overrides, "stages=[eval]", f"adapter={adapter}"]), tmp_path / "eval")
    rows = [(tmp_path / d / "eval" / "predictions.jsonl").read_text() for d in ("finetune", "eval")]
    assert again.metrics == ctx.metrics and again.metrics["n"] == 8 and rows[0] == rows[1]
    # and the aligned projector is what made the difference: without it the same adapter sees other inputs
    cfg = compose("smoke", overrides)
    batch = Collator(again.processor)(load_splits(cfg.data)["test"][:4])
    batch.pop("labels")
    without, _ = load_adapted(compose("smoke", overrides[:1] + overrides[2:]), str(adapter))
    with torch.no_grad():
        assert not torch.allclose(again.model(**batch).logits, without(**batch).logits, atol=1e-4)


def test_export_of_an_align_run_writes_the_base_with_its_projector(aligned, tmp_path, capsys):
    from transformers import LlavaForConditionalGeneration

    cfg = compose("align", [*ALIGN, "stages=[export]", f"model.projector={aligned.run_dir / 'projector'}",
                            "export.merge=true", "export.dtype=float32"])
    ctx = run(cfg, tmp_path / "export")
    assert "no adapter to export; the aligned projector is" in capsys.readouterr().out
    assert ctx.extra["verification"]["passed"] is True
    merged = LlavaForConditionalGeneration.from_pretrained(ctx.run_dir / "merged").state_dict()
    expected = aligned.model.state_dict()
    assert all(torch.equal(merged[k], expected[k]) for k in expected if "multi_modal_projector" in k)
    card = (ctx.run_dir / "merged" / "README.md").read_text()
    assert "projector alignment (LLaVA's stage 1)" in card and "projector-alignment" in card
    assert "lora" not in card.split("---")[1].replace("lora_llava", "")  # no LoRA tags in the card's metadata


def write_captions(folder, n=24):
    """A caption file in LLaVA's pretraining format (blip_laion_cc_sbu_558k.json) with its images."""
    import random

    from lora_llava.data.synthetic import COLORS, draw

    (folder / "images").mkdir(parents=True)
    records = []
    for i, color in zip(range(n), list(COLORS) * n):
        draw("square", color, "top left", 32, random.Random(i)).save(folder / "images" / f"{i:03d}.png")
        instruction = "Give a brief description of the image." + ("\n<image>" if i % 2 else "")
        records.append({"id": f"{i:09d}", "image": f"{i:03d}.png", "conversations": [
            {"from": "human", "value": instruction if i % 2 else f"<image>\n{instruction}"},
            {"from": "gpt", "value": f"a {color} square in the top left"}]})
    (folder / "captions.json").write_text(json.dumps(records))
    return folder / "captions.json", folder / "images"


def test_a_teams_caption_file_trains_through_llava_json(tmp_path):
    """data.source=llava_json reads LLaVA's pretraining captions; the caption (and EOS) is all that is supervised."""
    from lora_llava.data.collate import IGNORE_INDEX, Collator
    from lora_llava.models.load import load_processor
    from lora_llava.train.stage import prepare_splits

    path, images = write_captions(tmp_path)
    cfg = compose("align", ["data.source=llava_json", f"data.path={path}", f"data.image_root={images}"])
    processor = load_processor(cfg.model)
    splits, _ = prepare_splits(cfg, processor, tmp_path)
    assert len(splits["train"]) + len(splits["validation"]) == 24
    sample = splits["train"][0]
    labels = Collator(processor, image_root=images)([sample])["labels"][0]
    supervised = processor.tokenizer.decode(labels[labels != IGNORE_INDEX])
    assert supervised.strip() == f"{sample.answer}{processor.tokenizer.eos_token}"


@pytest.mark.slow
def test_readme_commands(tmp_path):
    """README's two commands as written, in a temporary run directory: align, then the smoke fine-tune from it."""
    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "lora_llava", *args], capture_output=True, text=True,
                              timeout=1800, cwd=tmp_path, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    cli("recipe=align", "hydra.run.dir=outputs/align")
    assert (tmp_path / "outputs/align/projector/projector.safetensors").is_file()
    out = cli("recipe=smoke", "model.projector=outputs/align/projector", "hydra.run.dir=outputs/smoke-aligned")
    assert "held-out accuracy" in out
    # README's team command, with the tiny model substituted for model=llava-1.5-7b (no download here)
    path, images = write_captions(tmp_path / "my")
    cli("recipe=align", "model=tiny", "data.source=llava_json", f"data.path={path}", f"data.image_root={images}",
        "hydra.run.dir=outputs/align-mine")
    assert (tmp_path / "outputs/align-mine/projector/projector.json").is_file()

"""Every stage for the anyres families, on their tiny builds (LLaVA-1.5's tiny model has test_smoke.py and the
rest of this folder): the smoke recipe learns to read the images (held-out accuracy >= 0.9, near chance on blank
images), batched evaluation equals batch size 1, predict answers, a push dry run stages a loadable adapter, QLoRA
(NF4) training merges into a 16-bit base that verification accepts, and (slow) a resumed run ends where a straight
one does. One smoke run per family is shared by the tests of this module."""

import json

import pytest
import torch
from PIL import Image

from lora_llava.data import load_splits
from lora_llava.data.samples import Sample
from lora_llava.eval import predict
from lora_llava.eval.generate import generate
from lora_llava.eval.scoring import score
from lora_llava.run import run
from tests.conftest import smoke_config
from tests.integration.test_eval_batching import mixed_questions
from tests.integration.test_export import qlora_adapter

ANYRES = ["tiny-next", "tiny-onevision"]


@pytest.fixture(scope="session", params=ANYRES)
def trained_family(request, tmp_path_factory):
    """`python -m lora_llava recipe=smoke model=<family>` (train, eval, export), once per family."""
    cfg = smoke_config(f"model={request.param}")
    return request.param, run(cfg, tmp_path_factory.mktemp(f"smoke_{request.param}"))


def test_smoke_reads_the_images(trained_family):
    name, ctx = trained_family
    metrics = json.loads((ctx.run_dir / "eval" / "metrics.json").read_text())
    print(f"{name}: held-out accuracy {metrics['accuracy']:.3f} on {metrics['n']} questions")
    assert metrics["accuracy"] >= 0.9
    test = load_splits(smoke_config().data)["test"]
    blank = [Sample(s.id, s.turns, [Image.new("RGB", (32, 32), (245, 245, 245))], s.meta) for s in test]
    _, blind = score("exact", blank, generate(ctx.model, ctx.processor, blank, batch_size=32, max_new_tokens=8))
    print(f"{name}: blank images {blind['accuracy']:.3f}")
    assert blind["accuracy"] <= 0.35  # 6 colours or 4 places: chance is at most 1/4 per question


def test_batched_answers_equal_batch_size_one(trained_family):
    _, ctx = trained_family
    samples = mixed_questions()
    # images of several sizes, so that batches mix tile counts and image token counts
    for i, sample in enumerate(samples):
        if sample.images:
            sample.images[0] = sample.images[0].resize((32 + 16 * (i % 4), 32 + 24 * (i % 3)))
    one = generate(ctx.model, ctx.processor, samples, batch_size=1, max_new_tokens=8)
    assert sum(bool(a) for a in one) >= 15
    assert generate(ctx.model, ctx.processor, samples, batch_size=8, max_new_tokens=8,
                    group_by_length=False) == one


def test_predict_answers_with_the_saved_adapter(trained_family, tmp_path, capsys):
    name, ctx = trained_family
    sample = load_splits(smoke_config().data)["test"][0]
    sample.images[0].save(tmp_path / "shape.png")
    question = sample.turns[0].text.split("\n", 1)[1]
    predict.main(["recipe=smoke", f"model={name}", f"adapter={ctx.run_dir / 'adapter'}",
                  f"image={tmp_path / 'shape.png'}", f"question={question}", "max_new_tokens=8"])
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed == generate(ctx.model, ctx.processor, [sample], max_new_tokens=8)[0] and printed


def test_push_dry_run_stages_an_adapter_that_loads(trained_family, tmp_path, capsys):
    """`stages=[push] hub.dry_run=true`: the staged copy is loaded onto the family's base and checked; no network."""
    name, ctx = trained_family
    run(smoke_config(f"model={name}", "stages=[push]", f"adapter={ctx.run_dir / 'adapter'}", "hub.dry_run=true"),
        tmp_path)
    assert (tmp_path / "hub_upload" / "adapter_model.safetensors").is_file()
    assert "nothing uploaded" in capsys.readouterr().out


@pytest.mark.parametrize("family", ["tiny", *ANYRES])
def test_qlora_trains_merges_and_verifies(family, tmp_path):
    """NF4 base (language model only), adapter trained, merged into bf16 and checked by verification.json."""
    cfg = smoke_config(f"model={family}", "quant=nf4")
    adapter = qlora_adapter(cfg, tmp_path / "adapter")
    run(smoke_config(f"model={family}", "quant=nf4", "stages=[export]", f"adapter={adapter}",
                     "export.merge=true", "export.dtype=bfloat16"), tmp_path / "run")
    report = json.loads((tmp_path / "run" / "merged" / "verification.json").read_text())
    assert report["passed"] is True and report["quantized_layers"] == 0 and report["lora_layers"] == 0
    assert report["top1_agreement"] > 0.9


@pytest.mark.parametrize("family", ["tiny", *ANYRES])
def test_quantization_leaves_tower_projector_and_head_alone(family):
    from lora_llava.models.families import family_for_config
    from lora_llava.models.load import build_model_and_processor

    cfg = smoke_config(f"model={family}", "quant=nf4")
    model, _ = build_model_and_processor(cfg.model, cfg.quant)
    names = family_for_config(model.config)
    four_bit = [n for n, m in model.named_modules() if type(m).__name__ == "Linear4bit"]
    assert four_bit and all(names.language_model in n for n in four_bit)
    assert not [n for n in four_bit if names.vision_tower in n or names.projector in n or "lm_head" in n]
    assert model.lm_head.weight.dtype == torch.float32


@pytest.mark.slow
@pytest.mark.parametrize("family", ANYRES)
def test_resume_from_a_checkpoint_gives_the_straight_runs_adapter(family, tmp_path):
    """image_sizes and multi-tile pixels survive a resume: a run continued from its step-3 checkpoint ends with
    the adapter of the run that never stopped."""
    import shutil

    from safetensors.torch import load_file

    args = [f"model={family}", "stages=[train]", "data.synthetic.n_train=24", "data.synthetic.n_eval=8",
            "train.batch_size=4", "train.max_steps=6", "train.save_steps=3", "train.save_total_limit=null",
            "train.eval_steps=null", "train.logging_steps=1", "train.group_by_modality_length=true"]
    run(smoke_config(*args), tmp_path / "straight")
    (tmp_path / "resumed" / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "straight" / "checkpoints" / "checkpoint-3",
                    tmp_path / "resumed" / "checkpoints" / "checkpoint-3")
    run(smoke_config(*args, "train.resume=auto"), tmp_path / "resumed")
    log = [json.loads(line) for line in (tmp_path / "resumed" / "logs" / "train_log.jsonl").open()]
    assert [r["step"] for r in log if "loss" in r] == [4, 5, 6], "it continued from step 3, not from scratch"
    straight = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors")
    assert straight.keys() == resumed.keys()
    assert all(torch.allclose(straight[k], resumed[k], atol=1e-6) for k in straight)

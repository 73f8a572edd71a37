"""Screening guards both the train stage and the eval stage: a bad sample stops them before any step (raise),
or is left out and listed (skip)."""

import json

import pytest
from PIL import Image

from lora_llava.data.samples import SampleError
from lora_llava.eval.stage import eval_stage
from lora_llava.run import RunContext
from lora_llava.train.stage import train
from tests.conftest import smoke_config


def shapes(tmp_path, missing: int):
    Image.new("RGB", (32, 32), "red").save(tmp_path / "red.png")
    rows = [{"id": f"ok{i}", "image": "red.png", "question": "What color is the shape?", "answer": "red"}
            for i in range(6)]
    rows += [{"id": f"lost{i}", "image": f"lost{i}.png", "question": "Color?", "answer": "red"} for i in range(missing)]
    for name in ("train", "test"):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return [f"data.data_files.train={tmp_path / 'train.jsonl'}", f"data.data_files.test={tmp_path / 'test.jsonl'}",
            "data.source=jsonl", f"data.image_root={tmp_path}", "data.val_fraction=0"]


def test_train_stops_on_a_bad_sample_before_training(tmp_path):
    cfg = smoke_config(*shapes(tmp_path, missing=1))
    with pytest.raises(SampleError, match=r"'lost0' \(.*lost0.png\): image file not found"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_eval_skips_and_lists_bad_samples(tiny_model_and_processor, tmp_path, capsys):
    cfg = smoke_config(*shapes(tmp_path, missing=1), "data.on_error=skip", "data.max_skip_fraction=0.2",
                       "eval.max_new_tokens=2")
    model, processor = tiny_model_and_processor  # untrained is enough: this is about which samples are asked
    ctx = RunContext(tmp_path / "run", model=model, processor=processor)
    eval_stage(cfg, ctx)
    assert ctx.metrics["n"] == 6
    assert json.loads((tmp_path / "run" / "rejected.jsonl").read_text())["id"] == "lost0"
    assert "skipped 1 of 7 test samples" in capsys.readouterr().out
    with pytest.raises(SampleError, match="'lost0'"):
        eval_stage(smoke_config(*shapes(tmp_path, missing=1)), ctx)


def test_a_train_and_eval_run_reads_its_data_once(tmp_path, monkeypatch):
    """The preflight check of eval.split, the train stage and the eval stage share one load of the data; a run
    whose data config changes between stages (here: none) would load again."""
    from lora_llava import data
    from lora_llava.run import run

    loads = []
    real = data.load_splits
    monkeypatch.setattr(data, "load_splits", lambda cfg: loads.append(1) or real(cfg))
    cfg = smoke_config(*shapes(tmp_path, missing=0), "stages=[train,eval]", "train.max_steps=1",
                       "train.save_steps=1000", "eval.max_new_tokens=2")
    ctx = run(cfg, tmp_path / "run")
    assert len(loads) == 1
    assert ctx.metrics["n"] == 6 and (tmp_path / "run" / "adapter").is_dir()

"""The eval stage end to end on the tiny model: files of a smoke run, an adapter loaded by path, a LLaVA
answers file scored without any model, and validation loss logged during training."""

import json

import pytest

from lora_llava.data import load_splits
from lora_llava.eval.stage import eval_stage
from lora_llava.run import RunContext
from tests.conftest import smoke_config


def read_rows(eval_dir):
    return [json.loads(line) for line in (eval_dir / "predictions.jsonl").open()]


def test_smoke_run_writes_a_consistent_report(trained_smoke):
    eval_dir = trained_smoke.run_dir / "eval"
    rows = read_rows(eval_dir)
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert set(rows[0]) >= {"id", "prompt", "output", "parsed", "gold", "correct"}
    assert metrics["accuracy"] == sum(r["correct"] for r in rows) / len(rows)
    assert (metrics["n"], metrics["correct"]) == (len(rows), sum(r["correct"] for r in rows))
    report = (eval_dir / "report.md").read_text()
    assert f"**Accuracy {100 * metrics['accuracy']:.2f}%**" in report
    assert (eval_dir / "report.png").stat().st_size > 1000


def test_adapter_path_is_loaded_onto_the_base(trained_smoke, tmp_path):
    cfg = smoke_config("stages=[eval]", f"adapter={trained_smoke.run_dir / 'adapter'}", "eval.limit=24",
                       "eval.batch_size=5")
    ctx = RunContext(run_dir=tmp_path)
    eval_stage(cfg, ctx)
    rows = read_rows(tmp_path / "eval")
    trained_rows = read_rows(trained_smoke.run_dir / "eval")[:24]
    assert len(rows) == 24
    assert [r["output"] for r in rows] == [r["output"] for r in trained_rows]


def answers_file(path, samples, wrong_every=4, skip=()):
    """A LLaVA model_vqa_science.py-style answers file: question_id, prompt, text, answer_id, model_id."""
    with open(path, "w") as f:
        for i, s in enumerate(samples):
            if s.id in skip:
                continue
            text = "no idea" if i % wrong_every == 0 else s.answer.capitalize()
            f.write(json.dumps({"question_id": s.id, "prompt": s.turns[0].text, "text": text,
                                "answer_id": f"a{i}", "model_id": "elsewhere", "metadata": {}}) + "\n")


def test_a_predictions_file_is_scored_without_a_model(tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("lora_llava.models.load.load_adapted", no_model)
    monkeypatch.setattr("lora_llava.eval.answers.generate", no_model)
    cfg = smoke_config("stages=[eval]", "eval.limit=40", f"eval.predictions={tmp_path / 'answers.jsonl'}",
                       "eval.metadata_fields=[question_type]")
    test = load_splits(cfg.data)["test"][:40]
    answers_file(tmp_path / "answers.jsonl", test, skip={test[1].id, test[2].id})
    ctx = RunContext(run_dir=tmp_path / "run")
    eval_stage(cfg, ctx)
    rows = read_rows(tmp_path / "run" / "eval")
    # every 4th answer is wrong, two questions have no answer at all: 40 - 10 - 2 right
    assert ctx.metrics["correct"] == 28 and ctx.metrics["n"] == 40 and ctx.metrics["missing"] == 2
    assert [r["output"] for r in rows[1:3]] == ["", ""]
    assert set(ctx.metrics["by_field"]["question_type"]) == {"color", "place"}
    assert ctx.model is None


def test_a_predictions_file_for_another_split_is_an_error(tmp_path):
    cfg = smoke_config("stages=[eval]", f"eval.predictions={tmp_path / 'answers.jsonl'}")
    answers_file(tmp_path / "answers.jsonl", load_splits(cfg.data)["train"][:5])
    with pytest.raises(ValueError, match="none of its 5 question_ids.*eval.split"):
        eval_stage(cfg, RunContext(run_dir=tmp_path))


def test_validation_loss_is_logged_during_training(tmp_path):
    from lora_llava.run import run

    cfg = smoke_config("stages=[train]", "train.max_steps=4", "train.eval_steps=2", "train.batch_size=4",
                       "data.synthetic.n_train=16", "data.synthetic.n_eval=8")
    run(cfg, tmp_path)
    state = json.loads(next((tmp_path / "checkpoints").glob("checkpoint-*/trainer_state.json")).read_text())
    eval_steps = [entry["step"] for entry in state["log_history"] if "eval_loss" in entry]
    assert eval_steps == [2, 4]


def test_scienceqa_recipe_evaluates_the_test_split_after_training():
    from lora_llava.config import compose

    cfg = compose("scienceqa")
    assert cfg.stages.index("eval") > cfg.stages.index("train")
    assert (cfg.eval.scorer, cfg.eval.split, cfg.data.eval_split) == ("scienceqa", "test", "validation")
    assert cfg.eval.answer_suffix == "Answer with the option's letter from the given choices directly."
    assert cfg.train.eval_steps

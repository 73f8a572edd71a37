"""Task accuracy during training (train.eval_metric): logged at every eval step beside the loss, plotted in
loss.png's second panel, and with train.best_by=accuracy the best evaluation's adapter becomes the run's."""

import json

import pytest
import torch

from lora_llava.checks import check_values
from lora_llava.errors import ConfigError
from lora_llava.run import run
from lora_llava.train.callbacks import plot_losses
from tests.conftest import smoke_config


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "logs" / "train_log.jsonl").read_text().splitlines()]


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_smoke_logs_task_accuracy_at_each_eval_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = smoke_config("stages=[train]", "train.max_steps=48", "train.eval_steps=16", "train.eval_metric=true",
                       "train.eval_metric_limit=24", "train.best_by=accuracy", "train.report_to=[tensorboard]",
                       "data.synthetic.n_eval=24")
    ctx = run(cfg, tmp_path)
    logged = [r for r in records(tmp_path) if "eval_accuracy" in r]
    assert [r["step"] for r in logged] == [16, 32, 48]
    assert all(r["eval_accuracy_n"] == 24 and 0.0 <= r["eval_accuracy"] <= 1.0 for r in logged)
    assert any(r["eval_accuracy"] > 0 for r in logged), "the smoke task is learnt a little within 48 steps"
    # the eval loss is logged at the same steps, so the two read side by side
    assert [r["step"] for r in records(tmp_path) if "eval_loss" in r] == [16, 32, 48]
    # the best evaluation (the first of equals) is the one the run says it kept
    best = max(logged, key=lambda r: r["eval_accuracy"])
    kept = [r for r in records(tmp_path) if r.get("event") == "best"]
    assert kept and kept[-1]["step"] == best["step"] and kept[-1]["accuracy"] == best["eval_accuracy"]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file() and ctx.adapter_dir
    # loss.png has the accuracy panel; TensorBoard has the scalar
    assert (tmp_path / "logs" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert plot_losses(logged + records(tmp_path), tmp_path / "again.png") == ["loss", "task accuracy (validation)"]
    events = EventAccumulator(str(tmp_path / "logs")).Reload()
    assert "eval/accuracy" in events.Tags()["scalars"]


def test_best_by_keeps_an_early_peak_and_patience_stops(tmp_path, monkeypatch):
    """A scripted accuracy sequence that peaks at the second evaluation, then falls: the run stops after two
    evaluations without gain (patience=2) and its adapter holds the weights of the peak's step (8, of 16 run)."""
    from lora_llava.train import task_metric

    script = iter([0.5, 0.9, 0.6, 0.4, 0.3, 0.2])
    snapshots = {}

    def scripted(model, processor, samples, eval_cfg, data_cfg, step):
        snapshots[step] = trainable(model)
        return {"accuracy": next(script), "n": len(samples)}

    monkeypatch.setattr(task_metric, "measure_accuracy", scripted)
    cfg = smoke_config("stages=[train]", "train.max_steps=40", "train.eval_steps=4", "train.eval_metric=true",
                       "train.eval_metric_limit=4", "train.best_by=accuracy", "train.patience=2",
                       "data.synthetic.n_eval=8")
    ctx = run(cfg, tmp_path)
    assert sorted(snapshots) == [4, 8, 12, 16]  # stopped at step 16, not 40
    final = trainable(ctx.model)
    assert final.keys() == snapshots[8].keys()
    assert all(torch.equal(final[n], snapshots[8][n]) for n in final)
    assert not all(torch.equal(snapshots[16][n], snapshots[8][n]) for n in final)
    assert [r for r in records(tmp_path) if r.get("event") == "best"][-1]["step"] == 8
    # the saved adapter is the peak's too (projector included)
    from peft import get_peft_model_state_dict
    from peft.utils import load_peft_weights

    saved, expected = load_peft_weights(str(tmp_path / "adapter")), get_peft_model_state_dict(ctx.model)
    assert any("multi_modal_projector" in k for k in saved) and saved.keys() == expected.keys()
    assert all(torch.equal(saved[k], expected[k].cpu()) for k in saved)


@pytest.mark.parametrize("overrides, key", [
    (["train.best_by=accuracy"], "train.best_by"),
    (["train.patience=2"], "train.patience"),
    (["train.eval_metric=true", "train.eval_steps=null"], "train.eval_metric"),
    (["train.eval_metric=true", "train.best_by=loss"], "train.best_by"),
])
def test_what_the_metric_needs_is_checked_before_loading(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_values(smoke_config(*overrides))

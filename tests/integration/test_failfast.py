"""Runs that cannot succeed stop early and say why: a poisoned batch (inf in the inputs), a learning rate that
diverges or a non-finite gradient stops the run at the step it happens, naming the samples of the batch and the
last good checkpoint; a run where nothing is supervised refuses to start; train.seed matters."""

import json
import re

import pytest
import torch

from lora_llava.data.collate import Collator
from lora_llava.train.callbacks import TrainingDiverged
from lora_llava.train.stage import train
from tests.conftest import smoke_config

SMALL = ["stages=[train]", "data.synthetic.n_train=32", "data.synthetic.n_eval=8", "train.batch_size=4",
         "train.logging_steps=1"]


def _logged_steps(run_dir):
    rows = [json.loads(line) for line in (run_dir / "logs/train_log.jsonl").open()]
    return [r["step"] for r in rows if "loss" in r]


def test_inf_in_the_inputs_stops_at_that_step_naming_the_samples(tmp_path, monkeypatch):
    poisoned = "train-5"
    original = Collator.pixel_values

    def pixel_values(self, samples):
        pixels = original(self, samples)
        if any(s.id == poisoned for s in samples):
            pixels = torch.full_like(pixels, float("inf"))
        return pixels

    monkeypatch.setattr(Collator, "pixel_values", pixel_values)
    cfg = smoke_config(*SMALL, "train.max_steps=8", "train.save_steps=1")  # one epoch: every sample once
    with pytest.raises(TrainingDiverged) as err:
        train(cfg, tmp_path)
    message = str(err.value)
    step = int(re.search(r"stopped at step (\d+)", message).group(1))
    assert f"the loss is nan for the batch of samples [" in message and poisoned in message
    assert len(re.search(r"samples \[([^\]]*)\]", message).group(1).split(", ")) == 4
    assert _logged_steps(tmp_path) == list(range(1, step)), "it stops at the poisoned step, not later"
    expected = f"checkpoint-{step - 1}" if step > 1 else "Last good checkpoint: none"
    assert expected in message


def test_a_diverging_learning_rate_stops_the_run(tmp_path):
    cfg = smoke_config(*SMALL, "train.max_steps=8", "train.save_steps=1", "train.warmup_steps=0",
                       "train.learning_rate=1e30", "train.projector_learning_rate=1e30")
    with pytest.raises(TrainingDiverged, match=r"stopped at step 2: the loss is (nan|inf) .*checkpoint-1"):
        train(cfg, tmp_path)
    assert (tmp_path / "checkpoints/checkpoint-1/adapter_model.safetensors").is_file()


def test_a_non_finite_gradient_stops_the_run_even_with_a_finite_loss(tmp_path, monkeypatch):
    import lora_llava.train.stage as train_module

    apply = train_module.apply_adapters

    def apply_with_poisoned_gradient(*args, **kwargs):
        model = apply(*args, **kwargs)
        lora_b = next(p for n, p in model.named_parameters() if "lora_B" in n)
        lora_b.register_hook(lambda grad: grad * float("inf"))
        return model

    monkeypatch.setattr(train_module, "apply_adapters", apply_with_poisoned_gradient)
    with pytest.raises(TrainingDiverged, match=r"stopped at step 1: the gradient norm is (nan|inf) for the batch"):
        train(smoke_config(*SMALL, "train.max_steps=2"), tmp_path)


def test_a_run_with_nothing_supervised_refuses_to_start(tmp_path, monkeypatch):
    original = Collator.__call__

    def masked(self, items):
        batch = original(self, items)
        if "labels" in batch:
            batch["labels"] = torch.full_like(batch["labels"], -100)
        return batch

    monkeypatch.setattr(Collator, "__call__", masked)
    with pytest.raises(ValueError, match="nothing to learn.*every label is -100"):
        train(smoke_config(*SMALL, "train.max_steps=2"), tmp_path)
    assert not list(tmp_path.glob("checkpoints/checkpoint-*")) and not (tmp_path / "logs/train_log.jsonl").exists()


def _losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "logs/train_log.jsonl").open()]
    return [r["loss"] for r in rows if "loss" in r]


def test_train_seed_decides_the_losses(tmp_path):
    """Another seed, other losses: train.seed draws the data order, the adapters' initialisation and dropout.
    (That the same seed gives the same losses, test_resume.py shows with two separate processes.)"""
    runs = {}
    for seed in (1, 2):
        train(smoke_config(*SMALL, "train.max_steps=2", "train.warmup_steps=0", f"train.seed={seed}"),
              tmp_path / str(seed))
        runs[seed] = _losses(tmp_path / str(seed))
    assert len(runs[1]) == len(runs[2]) == 2 and runs[1] != runs[2]

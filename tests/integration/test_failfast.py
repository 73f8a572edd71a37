"""Runs that cannot succeed stop early and say why: a poisoned batch (inf in the inputs), a learning rate that
diverges or a non-finite gradient stops the run at the step it happens, naming the samples of the batch and the
last good checkpoint; a run where nothing is supervised refuses to start; train.seed matters."""

import json
import math
import re

import pytest
import torch

from lora_llava.data.collate import Collator
from lora_llava.errors import ConfigError
from lora_llava.run import run
from lora_llava.train.callbacks import NotLearning, TrainingDiverged
from lora_llava.train.stage import train
from tests.conftest import smoke_config

SMALL = ["stages=[train]", "data.synthetic.n_train=32", "data.synthetic.n_eval=8", "train.batch_size=4",
         "train.logging_steps=1"]


def _logged_steps(run_dir):
    rows = [json.loads(line) for line in (run_dir / "logs/train_log.jsonl").open()]
    return [r["step"] for r in rows if "loss" in r]


def poison_pixels(monkeypatch, poisoned: str) -> None:
    """Make the collator give sample `poisoned` infinite pixels (as a corrupt preprocessed image would)."""
    original = Collator.sample_image_inputs

    def sample_image_inputs(self, sample):
        inputs = original(self, sample)
        if sample.id == poisoned:
            inputs["pixel_values"] = torch.full_like(inputs["pixel_values"], float("inf"))
        return inputs

    monkeypatch.setattr(Collator, "sample_image_inputs", sample_image_inputs)


def test_inf_in_the_inputs_stops_at_that_step_naming_the_samples(tmp_path, monkeypatch):
    poisoned = "train-5"
    poison_pixels(monkeypatch, poisoned)
    cfg = smoke_config(*SMALL, "train.max_steps=8", "train.save_steps=1")  # one epoch: every sample once
    with pytest.raises(TrainingDiverged) as err:
        train(cfg, tmp_path)
    message = str(err.value)
    step = int(re.search(r"stopped at step (\d+)", message).group(1))
    assert "the loss is nan for the batch of samples [" in message and poisoned in message
    assert len(re.search(r"samples \[([^\]]*)\]", message).group(1).split(", ")) == 4
    assert _logged_steps(tmp_path) == list(range(1, step)), "it stops at the poisoned step, not later"
    # The smoke recipe keeps one checkpoint, the one saved just before the poisoned batch: it holds the weights
    # that met the batch, so it is offered for the case where the samples were at fault, not for a lower rate.
    assert "No checkpoint before the weights that gave this result is kept" in message
    assert f"checkpoint-{step - 1} holds the weights that met this batch" in message


def test_a_diverging_learning_rate_stops_the_run(tmp_path):
    cfg = smoke_config(*SMALL, "train.max_steps=8", "train.save_steps=1", "train.warmup_steps=0",
                       "train.learning_rate=1e30", "train.projector_learning_rate=1e30")
    with pytest.raises(TrainingDiverged, match=r"stopped at step 2: the loss is (nan|inf) .*No checkpoint before"):
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


# Step 1 runs at rate 0 (the warm-up starts there), so checkpoint-1 holds sound weights; step 2 at 1e35 / 4
# ruins them and step 3's loss is not finite.
DIVERGE = [*SMALL, "train.max_steps=6", "train.save_steps=1", "train.lr_scheduler_type=constant_with_warmup",
           "train.warmup_steps=4", "train.learning_rate=1e35", "train.save_total_limit=2"]


def _rates(run_dir):
    rows = [json.loads(line) for line in (run_dir / "logs/train_log.jsonl").open()]
    return [r for r in rows if "learning_rate" in r or r.get("event") == "resume"]


def test_following_the_divergence_advice_resumes_at_the_lower_rate(tmp_path):
    with pytest.raises(TrainingDiverged) as err:
        run(smoke_config(*DIVERGE), tmp_path)
    message = str(err.value)
    assert "stopped at step 3" in message and f"Last good checkpoint: {tmp_path / 'checkpoints'}/checkpoint-1." \
        in message
    # Resuming with a changed rate but without saying so is refused, naming the key and the override to add.
    with pytest.raises(ConfigError, match=r"train.learning_rate: 1e\+35 -> 0.001.*train.resume_changes=\[learning"):
        run(smoke_config(*DIVERGE, "train.resume=auto", "train.learning_rate=1e-3"), tmp_path)
    advice = re.search(r"add `([^`]*)`", message).group(1).replace("LOWER", "1e-3")
    run(smoke_config(*DIVERGE, *advice.split()), tmp_path)  # as the message says: added to the same command
    rows = _rates(tmp_path)
    event = next(i for i, r in enumerate(rows) if r.get("event") == "resume")
    assert rows[event]["changes"] == {"train.learning_rate": {"from": 1e35, "to": 1e-3}}
    before, after = rows[:event], rows[event + 1:]
    assert [r["step"] for r in after] == [2, 3, 4, 5, 6]
    assert max(r["learning_rate"] for r in before) > 1e30
    assert max(r["learning_rate"] for r in after) == pytest.approx(1e-3)  # the scheduler continues at the new rate
    assert all(r["learning_rate"] <= 1e-3 * (1 + 1e-9) for r in after)
    assert all(math.isfinite(r["loss"]) for r in after)
    assert (tmp_path / "checkpoints" / "abandoned-checkpoint-2").is_dir()


def test_zero_gradients_stop_the_run(tmp_path, monkeypatch):
    import lora_llava.train.stage as train_module

    apply = train_module.apply_adapters

    def apply_with_zero_gradients(*args, **kwargs):
        model = apply(*args, **kwargs)
        for param in model.parameters():
            if param.requires_grad:
                param.register_hook(lambda grad: grad * 0)
        return model

    monkeypatch.setattr(train_module, "apply_adapters", apply_with_zero_gradients)
    with pytest.raises(NotLearning, match="stopped at step 3: the gradient norm has been exactly 0 for 3 steps"):
        train(smoke_config(*SMALL, "train.max_steps=6", "train.not_learning_steps=3"), tmp_path)


def test_a_loss_stuck_at_uniform_guessing_stops_the_run(tmp_path, monkeypatch):
    """A base whose language model head is all but blank (weights scaled by 1e-6: every token about equally
    likely) gives the adapters gradients, but their updates cannot move the logits: the loss sits at
    ln(vocabulary size). (An exactly zero head gives zero gradients, the other check.)"""
    import lora_llava.train.stage as train_module

    build = train_module.build_model_and_processor

    def build_with_blank_head(*args, **kwargs):
        model, processor = build(*args, **kwargs)
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(1e-6)
        return model, processor

    monkeypatch.setattr(train_module, "build_model_and_processor", build_with_blank_head)
    with pytest.raises(NotLearning, match=r"stopped at step 4: the loss has stayed at 5.95.*ln\(vocabulary size\)"):
        train(smoke_config(*SMALL, "train.max_steps=8", "train.not_learning_steps=4"), tmp_path)


def test_a_full_disk_while_saving_a_checkpoint_says_so(tmp_path, monkeypatch):
    """ENOSPC injected where the trainer writes the optimizer state of checkpoint-1."""
    import errno

    from lora_llava.errors import DiskFullError

    save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if "optimizer" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(DiskFullError, match=r"the disk is full \(no space left on device\) while writing "
                                            r"checkpoint-1 in .*GiB free now.*train.resume=auto") as err:
        train(smoke_config(*SMALL, "train.max_steps=2", "train.save_steps=1"), tmp_path)
    assert "Traceback" not in str(err.value)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if "checkpoint-1" in p.name] == [], \
        "the half-written checkpoint is removed to give the space back"

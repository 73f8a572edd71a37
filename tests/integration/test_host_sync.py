"""No host synchronisation per training step: the loss, gradient-norm and metric checks stay on the device and
are read back at logging (and saving) steps only, yet a divergence is still reported with its own step and samples.

On a GPU every `.item()`, `float()`, `bool()`, `.tolist()`, `.cpu()` or boolean-mask index of a device tensor
makes the CPU wait for the GPU to drain. This CPU machine has no device to wait for, so the test counts those
calls instead, made from lora_llava's training code or the trainer loop around it (transformers' Trainer, TRL's
SFTTrainer), per optimizer step. Data collation (lora_llava/data, on CPU tensors in the loader) is left out.
"""

import re
import sys

import pytest
import torch

from lora_llava.train.callbacks import TrainingDiverged
from lora_llava.train.stage import train
from lora_llava.train.trainer import LlavaSFTTrainer
from tests.conftest import smoke_config
from tests.integration.test_failfast import poison_pixels

SYNCS = ("item", "__float__", "__int__", "__bool__", "tolist", "cpu", "numpy")
WATCHED = ("/lora_llava/", "/transformers/trainer.py", "/trl/trainer/sft_trainer.py", __file__)
SMALL = ["stages=[train]", "data.synthetic.n_train=48", "data.synthetic.n_eval=8", "train.batch_size=4",
         "train.max_steps=10", "train.logging_steps=5", "train.save_steps=1000", "train.eval_steps=null"]


def _watched(filename: str) -> bool:
    return any(part in filename for part in WATCHED) and "/lora_llava/data/" not in filename


@pytest.fixture
def syncs(monkeypatch):
    """A list that collects (optimizer step being computed, kind, file:line) for every host sync from watched code."""
    found, current = [], {"step": 0}

    def record(kind):
        frame = sys._getframe(2)
        if _watched(frame.f_code.co_filename):
            found.append((current["step"], kind, f"{frame.f_code.co_filename}:{frame.f_lineno}"))

    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _original=original, _name=name, **kwargs):
            record(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    getitem = torch.Tensor.__getitem__

    def masked_getitem(self, index):
        if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
            record("boolean-mask index")  # its size is data-dependent: the device must report it
        return getitem(self, index)

    monkeypatch.setattr(torch.Tensor, "__getitem__", masked_getitem)
    training_step = LlavaSFTTrainer.training_step

    def stepping(self, *args, **kwargs):
        current["step"] = self.state.global_step + 1
        return training_step(self, *args, **kwargs)

    monkeypatch.setattr(LlavaSFTTrainer, "training_step", stepping)
    return found, current


def test_no_host_sync_between_logging_steps(tmp_path, syncs):
    found, current = syncs
    train(smoke_config(*SMALL), tmp_path)
    during = [s for s in found if 1 <= s[0] <= 10]
    assert {step for step, *_ in during} <= {5, 10}, [s for s in during if s[0] not in (5, 10)]
    assert len([s for s in during if s[0] == 5]) < 20  # a handful of read-backs, not one per step and metric
    # The counter sees a sync when there is one.
    current["step"] = 3
    torch.ones(()).item()
    assert found[-1][:2] == (3, "item")


def test_a_divergence_found_at_the_logging_step_names_its_own_step_and_samples(tmp_path, monkeypatch):
    poisoned, batches = "train-5", []
    training_step = LlavaSFTTrainer.training_step

    def recording(self, model, inputs, *args, **kwargs):
        batches.append(list(inputs["sample_ids"]))
        return training_step(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(LlavaSFTTrainer, "training_step", recording)
    poison_pixels(monkeypatch, poisoned)
    with pytest.raises(TrainingDiverged) as err:
        train(smoke_config(*SMALL, "train.logging_steps=10"), tmp_path)
    step = next(i + 1 for i, ids in enumerate(batches) if poisoned in ids)
    message = str(err.value)
    assert f"stopped at step {step}: the loss is nan" in message
    assert re.search(r"samples \[([^\]]*)\]", message).group(1).split(", ") == batches[step - 1]
    assert "No checkpoint before the weights that gave this result is kept" in message
    assert not list(tmp_path.glob("checkpoints/checkpoint-*"))


def test_data_num_workers_feed_training_from_persistent_prefetching_workers(tmp_path, monkeypatch):
    loaders = []
    get_train_dataloader = LlavaSFTTrainer.get_train_dataloader

    def capturing(self):
        loaders.append(get_train_dataloader(self))
        return loaders[-1]

    monkeypatch.setattr(LlavaSFTTrainer, "get_train_dataloader", capturing)
    train(smoke_config(*SMALL, "train.max_steps=3", "data.num_workers=2"), tmp_path)
    loader = loaders[0]
    assert (loader.num_workers, loader.persistent_workers, loader.prefetch_factor) == (2, True, 2)
    assert (tmp_path / "logs/train_log.jsonl").is_file()

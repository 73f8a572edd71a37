"""Resuming with changed settings, without training: the checkpoint's config against the new one."""

import pytest
import torch

from lora_llava.errors import ConfigError
from lora_llava.train.resume import apply_learning_rates, check_resume_config, save_config, training_config
from tests.conftest import smoke_config


@pytest.fixture
def checkpoint(tmp_path):
    save_config(training_config(smoke_config()), tmp_path)
    return tmp_path


def test_same_config_and_free_settings_resume_without_a_word(checkpoint):
    assert check_resume_config(smoke_config("train.resume=auto", "train.logging_steps=1", "train.save_steps=7",
                                            "eval.batch_size=2", "hub.timeout=5"), checkpoint) == {}


def test_a_change_that_cannot_happen_mid_run_is_refused_naming_it(checkpoint):
    with pytest.raises(ConfigError, match=r"peft.r: 16 -> 8.*cannot change within a run.*train.overwrite=true"):
        check_resume_config(smoke_config("train.resume=auto", "peft.r=8"), checkpoint)
    with pytest.raises(ConfigError, match=r"train.resume_changes: r cannot change on resume"):
        check_resume_config(smoke_config("train.resume=auto", "peft.r=8", "train.resume_changes=[r]"), checkpoint)


def test_listed_changes_are_returned_and_unlisted_ones_named_with_the_override(checkpoint):
    cfg = smoke_config("train.resume=auto", "train.learning_rate=1e-4", "train.max_steps=50")
    with pytest.raises(ConfigError, match=r"add train.resume_changes=\[learning_rate,max_steps\]"):
        check_resume_config(cfg, checkpoint)
    allowed = smoke_config("train.resume=auto", "train.learning_rate=1e-4", "train.max_steps=50",
                           "train.resume_changes=[learning_rate,train.max_steps]")
    assert check_resume_config(allowed, checkpoint) == {"train.learning_rate": (3e-3, 1e-4),
                                                         "train.max_steps": (-1, 50)}


def test_a_new_rate_reaches_the_optimizer_and_the_scheduler():
    adapters, projector = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([{"name": "adapters", "params": [adapters], "lr": 1e-2},
                                   {"name": "projector", "params": [projector], "lr": 1e-3}])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    applied = apply_learning_rates(optimizer, scheduler, {"train.learning_rate": (1e-2, 1e-4)})
    assert applied[0]["group"] == "adapters" and applied[0]["lr_now"] == pytest.approx(1e-4 / 4)
    assert optimizer.param_groups[1]["lr"] == pytest.approx(1e-3 / 4), "the projector keeps its rate"
    optimizer.step()
    scheduler.step()
    assert scheduler.get_last_lr() == pytest.approx([1e-4 / 5, 1e-3 / 5])

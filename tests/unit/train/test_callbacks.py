"""The pieces of a reliable run, one at a time and without training: checkpoint manifests and resume=auto,
rotation, the fail-fast checks and their messages, tracker selection, preemption signals, the log writers, and
what torchrun / accelerate processes must agree on."""

import json
import logging
import os
import signal
from types import SimpleNamespace

import pytest
import torch

from lora_llava.distributed import launch_overrides
from lora_llava.train import callbacks
from lora_llava.train.callbacks import (
    Preemption,
    TrainingDiverged,
    TrainLog,
    check_finite,
    check_supervised,
    check_trackers,
    plot_losses,
)
from lora_llava.train.checkpoints import (
    MANIFEST,
    CheckpointError,
    commit,
    problem,
    resolve_resume,
    rotate,
    scan,
    staging_root,
)

FILES = {"trainer_state.json": b"{}", "adapter_model.safetensors": b"x" * 100, "optimizer.pt": b"o" * 50,
         "scheduler.pt": b"s", "rng_state.pth": b"r" * 10}


def _checkpoint(root, step, files=FILES):
    """A committed checkpoint-<step> under `root`, written the way the trainer does: staged, then renamed."""
    staged = staging_root(root, step) / f"checkpoint-{step}"
    staged.mkdir(parents=True)
    for name, data in files.items():
        (staged / name).write_bytes(data)
    return commit(staged, root / f"checkpoint-{step}", step, world_size=1)


def test_commit_seals_a_manifest_and_leaves_no_staging_folder(tmp_path):
    final = _checkpoint(tmp_path, 7)
    manifest = json.loads((final / MANIFEST).read_text())
    assert manifest["step"] == 7 and manifest["files"]["adapter_model.safetensors"] == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-7"]
    assert problem(final) is None


def test_problem_names_a_truncated_or_missing_file_and_a_missing_manifest(tmp_path):
    final = _checkpoint(tmp_path, 3)
    (final / "optimizer.pt").write_bytes(b"o" * 20)
    assert "optimizer.pt has 20 bytes, 50 expected" in problem(final)
    (final / "optimizer.pt").unlink()
    assert problem(final) == "optimizer.pt is missing"
    (final / MANIFEST).unlink()
    assert f"no {MANIFEST}" in problem(final)


def test_resume_auto_takes_the_newest_complete_checkpoint_and_says_what_it_skipped(tmp_path, caplog):
    _checkpoint(tmp_path, 2)
    good = _checkpoint(tmp_path, 4)
    broken = _checkpoint(tmp_path, 6)
    (broken / "adapter_model.safetensors").write_bytes(b"x" * 10)
    (staging_root(tmp_path, 8) / "checkpoint-8").mkdir(parents=True)
    with caplog.at_level(logging.INFO, logger="lora_llava"):
        assert resolve_resume("auto", tmp_path) == str(good)
    assert "skipping" in caplog.text and "checkpoint-6: adapter_model.safetensors has 10 bytes" in caplog.text
    assert ".incomplete-checkpoint-8: interrupted while being written" in caplog.text


def test_resume_auto_without_a_checkpoint_starts_from_scratch(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="lora_llava"):
        assert resolve_resume("auto", tmp_path / "checkpoints") is None
    assert "training from the start" in caplog.text
    assert resolve_resume(None, tmp_path) is None


def test_resume_path_must_be_a_usable_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="train.resume=.*nope"):
        resolve_resume(str(tmp_path / "nope"), tmp_path)
    partial = tmp_path / "checkpoint-5"
    partial.mkdir()
    (partial / "adapter_model.safetensors").write_text("x")
    with pytest.raises(ValueError, match="cannot resume from it: trainer_state.json missing"):
        resolve_resume(str(partial), tmp_path)
    (partial / "trainer_state.json").write_text("{}")  # no manifest (plain transformers): its files must load
    with pytest.raises(ValueError, match="adapter_model.safetensors does not load"):
        resolve_resume(str(partial), tmp_path)
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, partial / "adapter_model.safetensors")
    assert resolve_resume(str(partial), tmp_path) == str(partial)
    sealed = _checkpoint(tmp_path, 6)
    (sealed / "optimizer.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="optimizer.pt has 0 bytes"):
        resolve_resume(str(sealed), tmp_path)
    assert resolve_resume(str(_checkpoint(tmp_path, 9)), tmp_path).endswith("checkpoint-9")


def _loadable_checkpoint(root, step):
    """A checkpoint whose files are real safetensors / torch files, as the trainer writes them."""
    import io

    from safetensors.torch import save

    buffer = io.BytesIO()
    torch.save({"state": {0: {"exp_avg": torch.ones(64)}}}, buffer)
    return _checkpoint(root, step, {"trainer_state.json": b"{}", "optimizer.pt": buffer.getvalue(),
                                    "adapter_model.safetensors": save({"w": torch.arange(64.0)})})


def _damage_in_place(path, at):
    """Same size, other bytes: what a size check cannot see."""
    data = bytearray(path.read_bytes())
    data[at:at + 16] = bytes(255 - b for b in data[at:at + 16])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("with_hashes", [True, False])
def test_a_checkpoint_damaged_in_place_is_skipped_for_the_one_before(tmp_path, caplog, with_hashes):
    good = _loadable_checkpoint(tmp_path, 2)
    damaged = _loadable_checkpoint(tmp_path, 4)
    if not with_hashes:  # a manifest written before hashes were recorded: the files are loaded instead
        manifest = json.loads((damaged / MANIFEST).read_text())
        del manifest["sha256"]
        (damaged / MANIFEST).write_text(json.dumps(manifest))
    # With hashes any byte counts (here inside the tensor data); without, only damage that breaks loading shows.
    optimizer = damaged / "optimizer.pt"
    _damage_in_place(optimizer, optimizer.stat().st_size // 2 if with_hashes else 0)
    assert problem(damaged) is None, "the size check alone passes it"
    with caplog.at_level(logging.INFO, logger="lora_llava"):
        assert resolve_resume("auto", tmp_path) == str(good)
    assert f"skipping {damaged}: optimizer.pt" in caplog.text and "damaged" in caplog.text
    assert f"resuming from {good}" in caplog.text
    assert "weights_only" not in caplog.text, "never suggest loading a pickle unsafely"
    with pytest.raises(CheckpointError, match="optimizer.pt .*damaged") as err:
        resolve_resume(str(damaged), tmp_path)
    assert "weights_only" not in str(err.value)


def test_resuming_from_an_older_checkpoint_sets_the_newer_ones_aside(tmp_path, caplog):
    older = _checkpoint(tmp_path, 2)
    _checkpoint(tmp_path, 4)
    assert resolve_resume(str(older), tmp_path) == str(older)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["abandoned-checkpoint-4", "checkpoint-2"]
    assert resolve_resume("auto", tmp_path) == str(older)


def test_rotate_keeps_the_newest_complete_checkpoints(tmp_path):
    for step in (1, 2, 3):
        _checkpoint(tmp_path, step)
    broken = _checkpoint(tmp_path, 4)
    (broken / MANIFEST).unlink()
    (staging_root(tmp_path, 5) / "checkpoint-5").mkdir(parents=True)
    rotate(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-3", "checkpoint-4"]
    complete, skipped = scan(tmp_path)
    assert [p.name for p in complete] == ["checkpoint-2", "checkpoint-3"] and len(skipped) == 1


def test_non_finite_values_stop_naming_step_samples_and_checkpoint(tmp_path):
    check_finite("loss", torch.tensor(1.5), 3, ["a"], tmp_path)  # finite: nothing happens
    ids = [f"s{i}" for i in range(40)]
    with pytest.raises(TrainingDiverged) as err:
        check_finite("gradient norm", torch.tensor(float("inf")), 12, ids, tmp_path / "none-yet")
    message = str(err.value)
    assert "step 12" in message and "gradient norm is inf" in message and "s0, s1" in message
    assert "and 8 more" in message and "No checkpoint before the weights that gave this result" in message
    saved = _checkpoint(tmp_path, 10)
    # The weights saved after step 10 are what gave step 11 its nan: only a checkpoint before them is trusted.
    with pytest.raises(TrainingDiverged, match="on rank 1: the loss is nan .*No checkpoint before the weights.*checkpoint-10 holds the weights"):
        check_finite("loss", float("nan"), 11, ["x"], tmp_path, rank=1)
    with pytest.raises(TrainingDiverged, match=f"Last good checkpoint: {saved}. .*train.resume={saved} "
                                               r"train.learning_rate=LOWER train.resume_changes=\[learning_rate\]"):
        check_finite("loss", float("nan"), 12, ["x"], tmp_path)


class _StubCollator:
    def __init__(self, supervised_row):
        self.supervised_row = supervised_row

    def __call__(self, rows):
        labels = torch.full((len(rows), 5), -100)
        for i, row in enumerate(rows):
            if row["sample_index"] == self.supervised_row:
                labels[i, 2] = 7
        return {"labels": labels}


def test_a_dataset_without_a_single_supervised_token_is_refused():
    rows = [{"sample_index": i} for i in range(100)]
    check_supervised(_StubCollator(supervised_row=50), rows)  # one supervised sample among those checked is enough
    with pytest.raises(ValueError, match="nothing to learn: none of the 64 training samples checked \\(of 100\\)"):
        check_supervised(_StubCollator(supervised_row=None), rows)


def test_trackers_only_when_named_and_installed(monkeypatch):
    assert check_trackers(["tensorboard"]) == ["tensorboard"]
    assert check_trackers(["none"]) == []
    with pytest.raises(ValueError, match="`all` would report to every tracker"):
        check_trackers(["all"])
    with pytest.raises(ValueError, match="unknown tracker 'wandbb'"):
        check_trackers(["wandbb"])
    monkeypatch.setattr(callbacks, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"lists wandb, which is not installed: pip install 'lora_llava\[wandb\]'"):
        check_trackers(["wandb"])


@pytest.mark.parametrize("recipe", ["smoke", "scienceqa", "custom_image_qa"])
def test_default_report_to_reaches_no_tracker(recipe, tmp_path):
    """Whatever is installed (wandb, trackio, ...), a recipe's defaults produce TensorBoard and nothing else."""
    from transformers.integrations import get_reporting_integration_callbacks

    from lora_llava.config import compose
    from lora_llava.train.stage import build_sft_config

    cfg = compose(recipe)
    args = build_sft_config(cfg.train, tmp_path, torch.float32, has_eval=False)
    assert check_trackers(cfg.train.report_to) == ["tensorboard"] and args.report_to == ["tensorboard"]
    assert [c.__name__ for c in get_reporting_integration_callbacks(args.report_to)] == ["TensorBoardCallback"]


def test_first_signal_asks_for_a_checkpoint_second_exits_at_once(monkeypatch):
    exits = []
    monkeypatch.setattr(os, "_exit", lambda code: exits.append(code) or (_ for _ in ()).throw(SystemExit(code)))
    before = signal.getsignal(signal.SIGTERM)
    preemption = Preemption()
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    args = SimpleNamespace(device=torch.device("cpu"))
    with preemption.installed():
        preemption.on_step_end(args, None, control)
        assert not control.should_save  # no signal yet: training goes on
        os.kill(os.getpid(), signal.SIGTERM)  # handled here; the process lives on
        preemption.on_step_end(args, None, control)
        assert preemption.signum == signal.SIGTERM and control.should_save and control.should_training_stop
        with pytest.raises(SystemExit):
            os.kill(os.getpid(), signal.SIGINT)
    assert exits == [128 + signal.SIGINT]
    assert signal.getsignal(signal.SIGTERM) is before


def test_preempted_exit_names_the_checkpoint_and_the_resume_command(tmp_path, caplog):
    saved = _checkpoint(tmp_path, 5)
    preemption = Preemption()
    preemption.signum = signal.SIGTERM
    with caplog.at_level(logging.WARNING, logger="lora_llava"), pytest.raises(SystemExit) as err:
        preemption.exit(tmp_path, 5, "python -m lora_llava recipe=smoke train.resume=auto hydra.run.dir=/r")
    assert err.value.code == 143
    assert f"stopped by SIGTERM after step 5; last checkpoint: {saved}" in caplog.text
    assert "train.resume=auto hydra.run.dir=/r" in caplog.text


def test_train_log_writes_every_logged_step_and_a_plot(tmp_path):
    writer = TrainLog(tmp_path / "logs")
    state = SimpleNamespace(is_world_process_zero=True, global_step=0, max_steps=4, epoch=0.0, log_history=[])
    args = SimpleNamespace(per_device_train_batch_size=2, gradient_accumulation_steps=3, world_size=2)
    writer.on_train_begin(args, state, None)
    for step, loss in ((1, 2.0), (2, 1.5)):
        state.global_step, state.epoch = step, step / 4
        writer.on_log(args, state, None, logs={"loss": loss})
        state.log_history.append({"step": step, "loss": loss})
    state.log_history.append({"step": 2, "eval_loss": 1.7})
    writer.on_train_end(args, state, None)
    rows = [json.loads(line) for line in (tmp_path / "logs/train_log.jsonl").open()]
    assert rows[0]["event"] == "start" and rows[0]["world_size"] == 2 and rows[0]["global_batch_size"] == 12
    assert [(r["step"], r["loss"]) for r in rows[1:]] == [(1, 2.0), (2, 1.5)]
    assert (tmp_path / "logs/loss.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_survives_an_empty_history(tmp_path):
    plot_losses([], tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 0


def test_processes_of_one_launch_must_name_one_run_directory(monkeypatch):
    assert launch_overrides(["recipe=smoke"]) == []  # a single process: Hydra's timestamped folder is fine
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit, match="hydra.run.dir=outputs/my_run"):
        launch_overrides(["recipe=smoke"])
    with pytest.raises(SystemExit, match="hydra.sweep.dir="):
        launch_overrides(["-m", "recipe=smoke", "hydra.run.dir=x"])
    assert launch_overrides(["recipe=smoke", "hydra.run.dir=x"]) == ["hydra.output_subdir=null",
                                                                    "hydra.job.name=rank1"]
    monkeypatch.setenv("RANK", "0")
    assert launch_overrides(["recipe=smoke", "hydra.run.dir=x"]) == []


def test_collator_adds_sample_ids_only_when_asked(tiny_model_and_processor):
    from lora_llava.data.collate import SAMPLE_IDS, Collator
    from lora_llava.data.synthetic import make_samples

    _, processor = tiny_model_and_processor
    samples = make_samples(3, 32, 0, "t")
    assert SAMPLE_IDS not in Collator(processor)(samples)
    assert Collator(processor, with_ids=True)(samples)[SAMPLE_IDS] == ["t-0", "t-1", "t-2"]
    assert SAMPLE_IDS not in Collator(processor, generation=True)(samples)

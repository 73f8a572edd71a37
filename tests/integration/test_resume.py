"""Exact resume: a run killed with SIGTERM mid-epoch and continued with `train.resume=auto` follows the
uninterrupted run step for step (per-step losses within 1e-6 on CPU) and ends with the same adapter. Along the
way: the kill leaves a checkpoint and a message saying how to resume, a damaged checkpoint and a half-written
one are skipped with a message, save_total_limit is honoured, TensorBoard events, train_log.jsonl and loss.png
exist, and two separate processes with the same train.seed log the same losses."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

# 16 samples in batches of 4: 4 steps an epoch, 12 in all; a loss logged at every step; no scheduled checkpoint
# before the end (only the one the signal asks for). The signal lands in the second epoch, so the resume must
# rebuild that epoch's data order and then cross into the third.
ARGS = ["recipe=smoke", "stages=[train]", "data.synthetic.n_train=16", "data.synthetic.n_eval=8",
        "train.batch_size=4", "train.epochs=3", "train.logging_steps=1", "train.save_steps=1000",
        "train.eval_steps=null", "train.group_by_modality_length=true"]  # the real recipes' sampler
STEPS, STEPS_PER_EPOCH, SIGNAL_AFTER = 12, 4, 5


def _env(tmp_path):
    # One thread each, so the straight and the interrupted run can share the 2 cores with identical arithmetic.
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _start(run_dir: Path, env, *extra) -> subprocess.Popen:
    out = open(run_dir.parent / f"{run_dir.name}.out", "w")  # noqa: SIM115 - the child process writes it
    return subprocess.Popen([sys.executable, "-m", "lora_llava", *ARGS, *extra, f"hydra.run.dir={run_dir}"],
                            stdout=out, stderr=subprocess.STDOUT, env=env)


def _output(run_dir: Path) -> str:
    return (run_dir.parent / f"{run_dir.name}.out").read_text()


def _losses(run_dir: Path) -> dict[int, float]:
    """step -> loss, the last record per step winning (a resumed run appends to the same log)."""
    rows = [json.loads(line) for line in (run_dir / "logs/train_log.jsonl").open()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _wait_for_step(run_dir: Path, proc: subprocess.Popen, step: int, timeout: float = 240) -> None:
    log = run_dir / "logs/train_log.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and any(k >= step for k in _losses(run_dir)):
            return
        time.sleep(0.02)
    raise AssertionError(f"never reached step {step}:\n{_output(run_dir)[-3000:]}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(straight run dir, interrupted-then-resumed run dir, what the interruption left behind)."""
    from lora_llava.models.tiny import tiny_checkpoint

    tiny_checkpoint(0)  # built once here rather than by both runs at once
    tmp = tmp_path_factory.mktemp("resume")
    env = _env(tmp)
    straight, killed = tmp / "straight", tmp / "killed"
    straight_proc = _start(straight, env)
    killed_proc = _start(killed, env)
    _wait_for_step(killed, killed_proc, SIGNAL_AFTER)
    killed_proc.send_signal(signal.SIGTERM)
    assert killed_proc.wait(timeout=240) == 128 + signal.SIGTERM, _output(killed)[-3000:]
    interrupted = {"output": _output(killed), "checkpoints": sorted(p.name for p in (killed / "checkpoints").iterdir()),
                   "losses": _losses(killed)}
    saved = killed / "checkpoints" / f"checkpoint-{max(interrupted['losses'])}"
    # A later checkpoint cut off mid-copy, and a staging folder of a save that never finished: both must be skipped.
    damaged = killed / "checkpoints" / "checkpoint-10"
    shutil.copytree(saved, damaged)
    weights = damaged / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (killed / "checkpoints" / ".incomplete-checkpoint-11" / "checkpoint-11").mkdir(parents=True)
    resumed_proc = _start(killed, env, "train.resume=auto")
    assert straight_proc.wait(timeout=300) == 0, _output(straight)[-3000:]
    assert resumed_proc.wait(timeout=300) == 0, _output(killed)[-3000:]
    return straight, killed, interrupted


def test_sigterm_saves_a_checkpoint_mid_epoch_and_says_how_to_resume(runs):
    _, killed, interrupted = runs
    last = max(interrupted["losses"])
    assert SIGNAL_AFTER <= last < 2 * STEPS_PER_EPOCH, "the signal should land in the middle of the second epoch"
    assert interrupted["checkpoints"] == ["README.md", f"checkpoint-{last}"]
    assert f"stopped by SIGTERM after step {last}" in interrupted["output"]
    assert f"train.resume=auto hydra.run.dir={killed}" in interrupted["output"]


def test_resumed_losses_equal_the_straight_run(runs):
    straight, killed, interrupted = runs
    expected, actual = _losses(straight), _losses(killed)
    assert sorted(expected) == list(range(1, STEPS + 1)) == sorted(actual)
    resumed_from = max(interrupted["losses"])
    for step in range(1, STEPS + 1):  # before the kill: the same seed in another process; after: the resume
        assert abs(actual[step] - expected[step]) <= 1e-6, (step, resumed_from, actual[step], expected[step])


def test_resumed_adapter_equals_the_straight_run(runs):
    straight, killed, _ = runs
    expected = load_file(straight / "adapter/adapter_model.safetensors")
    actual = load_file(killed / "adapter/adapter_model.safetensors")
    assert sorted(expected) == sorted(actual)
    assert any("multi_modal_projector" in k for k in expected), "the projector travels with the adapter"
    for key in expected:
        assert torch.allclose(expected[key], actual[key], atol=1e-6, rtol=0), key


def test_damaged_and_half_written_checkpoints_are_skipped_with_a_message(runs):
    _, killed, interrupted = runs
    out = _output(killed)
    assert "skipping" in out and "checkpoint-10: adapter_model.safetensors has" in out
    assert ".incomplete-checkpoint-11: interrupted while being written" in out
    assert f"resuming from {killed / 'checkpoints' / ('checkpoint-' + str(max(interrupted['losses'])))}" in out


def test_save_total_limit_keeps_the_newest_complete_checkpoint(runs):
    _, killed, _ = runs
    left = sorted(p.name for p in (killed / "checkpoints").iterdir())
    # smoke keeps 1: the resume point went, the damaged copy is left for a person, the staging folder is gone
    assert left == ["README.md", "checkpoint-10", f"checkpoint-{STEPS}"]


def test_logs_people_can_use(runs):
    straight, _, _ = runs
    logs = straight / "logs"
    assert list(logs.glob("events.out.tfevents.*")), "TensorBoard is the default tracker"
    assert (logs / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    start = json.loads((logs / "train_log.jsonl").open().readline())
    assert start["event"] == "start" and start["world_size"] == 1 and start["max_steps"] == STEPS

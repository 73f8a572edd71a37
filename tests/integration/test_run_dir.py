"""A run directory belongs to one run: the smoke command run twice in one directory leaves the first run's
adapter and config as they were (the second is refused, in one line, saying how to resume or start over);
`train.overwrite=true` moves the earlier run aside instead of mixing it with the new one; a second process is
kept out while a run holds the directory, and a lock left by a killed process is taken over.

The smoke recipe is shrunk (16 samples, one epoch) to keep the test fast; the behaviour does not depend on it."""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from lora_llava.run import run
from lora_llava.rundir import LOCK, RunDirError, acquire, release
from tests.conftest import smoke_config

SMALL = ["recipe=smoke", "stages=[train]", "data.synthetic.n_train=16", "data.synthetic.n_eval=4", "train.epochs=1",
         "train.report_to=[]"]


def _cli(run_dir, *extra, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "lora_llava", *SMALL, *extra, f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, env=env, timeout=timeout, check=False)


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("twice") / "run"
    done = _cli(run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def test_the_same_command_twice_is_refused_and_the_first_run_is_untouched(first_run):
    before = {name: _digest(first_run / name) for name in ("adapter", ".hydra", "checkpoints")}
    again = _cli(first_run, "train.learning_rate=1e-3")
    assert again.returncode != 0
    message = again.stderr.strip().splitlines()
    assert len(message) == 1 and "Traceback" not in again.stderr, again.stderr
    assert f"{first_run} already holds a finished run" in message[0]
    assert "train.resume=auto" in message[0] and "train.overwrite=true" in message[0]
    assert {name: _digest(first_run / name) for name in before} == before  # .hydra/ too: refused before Hydra wrote


def test_overwrite_moves_the_earlier_run_aside_and_trains_afresh(first_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(first_run, run_dir)
    adapter = _digest(run_dir / "adapter")
    cfg = smoke_config(*SMALL[1:], "train.overwrite=true")
    run(cfg, run_dir)
    replaced = list(run_dir.glob("replaced-*"))
    assert len(replaced) == 1 and _digest(replaced[0] / "adapter") == adapter
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"README.md", "checkpoint-1"}
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_resume_and_overwrite_together_are_refused(first_run):
    from lora_llava.errors import ConfigError

    with pytest.raises(ConfigError, match="choose one"):
        run(smoke_config(*SMALL[1:], "train.overwrite=true", "train.resume=auto"), first_run)


HOLDER = textwrap.dedent("""
    import sys, time
    from lora_llava.rundir import acquire
    acquire(sys.argv[1])
    print("held", flush=True)
    time.sleep(120)
""")


def test_a_second_process_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(tmp_path, caplog):
    import socket

    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError) as err:
            acquire(tmp_path)
        message = str(err.value)
        assert f"in use by pid {holder.pid} on {socket.gethostname()}" in message and "-c" in message
        with pytest.raises(RunDirError, match=f"pid {holder.pid}"):
            run(smoke_config("stages=[plan]"), tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / LOCK).is_file(), "a killed process leaves its lock file behind"
    acquire(tmp_path)
    try:
        assert f"taking over the lock of pid {holder.pid}" in caplog.text
    finally:
        release(tmp_path)
    assert not (tmp_path / LOCK).exists()

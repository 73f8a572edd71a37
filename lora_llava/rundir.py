"""A run directory belongs to one run.

A lock file (`.lora_llava.lock`, holding the pid, host, command and start time of its holder) keeps a second
command out while a run works in the directory; under torchrun / accelerate launch rank 0 holds it for the
whole job. A directory that already holds a training run (its adapter/, checkpoints/ or training log) is
trained in again only with `train.resume` (continue it) or `train.overwrite=true` (move its files aside into
`replaced-<time>/` and start over), so trained work is never replaced and old checkpoints never mix with new
ones. A stage that assembles `adapter/` from `adapter=PATH` never writes over another adapter.

With `python -m lora_llava` these checks run from a Hydra callback (conf/base.yaml) before Hydra writes
`.hydra/`, so a refused command leaves the earlier run's config in place; `run()` repeats them for callers that
do not go through Hydra (tests, scripts, multirun jobs).
"""

from __future__ import annotations

import filecmp
import json
import logging
import os
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from lora_llava.distributed import is_main_process
from lora_llava.errors import ConfigError, UserError

log = logging.getLogger("lora_llava")

LOCK = ".lora_llava.lock"
REPLACED_PREFIX = "replaced-"
_held: dict[str, list] = {}  # resolved run dir -> [file descriptor, depth]: re-entrant within one process


class RunDirError(UserError):
    """The run directory is in use, or holds a run this command would overwrite."""


def _command() -> str:
    # /proc keeps the command line as typed; __main__ rewrites sys.argv for Hydra.
    try:
        return Path("/proc/self/cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ").decode()
    except OSError:
        return " ".join([sys.executable, *sys.argv])


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": _command(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "job": os.environ.get("TORCHELASTIC_RUN_ID")}


def describe(holder: dict) -> str:
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: "
            f"`{holder.get('command')}`")


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        return json.loads(os.read(fd, 65536) or b"{}")
    except ValueError:
        return {}


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def acquire(run_dir: Path) -> None:
    """Lock `run_dir` for this process, or RunDirError naming the process that holds it. A lock left by a
    process that is gone (killed) is taken over with a warning."""
    import fcntl

    key = str(Path(run_dir).resolve())
    if key in _held:
        _held[key][1] += 1
        return
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    path = Path(run_dir) / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise RunDirError(f"run directory {run_dir} is in use by {describe(holder)}. Wait for it to finish, or "
                              "run in another directory (hydra.run.dir=...)") from None
        if _same_file(fd, path):  # else the holder removed it between our open and our lock: open it anew
            break
        os.close(fd)
    previous = _read(fd)
    if previous:  # the file outlived its holder (killed): flock is released with the process, the file is not
        log.warning("run directory %s: taking over the lock of %s, which is no longer running", run_dir,
                    describe(previous))
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(_holder()).encode(), 0)
    _held[key] = [fd, 1]


def release(run_dir: Path) -> None:
    key = str(Path(run_dir).resolve())
    if key not in _held:
        return
    _held[key][1] -= 1
    if _held[key][1] > 0:
        return
    fd, _ = _held.pop(key)
    Path(run_dir, LOCK).unlink(missing_ok=True)  # removed while still locked, so nobody takes a stale file
    os.close(fd)


def previous_run(run_dir: Path) -> str | None:
    """What in `run_dir` shows an earlier training run, in words, or None."""
    run_dir = Path(run_dir)
    if (run_dir / "adapter").is_dir() and any((run_dir / "adapter").iterdir()):
        return f"a finished run ({run_dir / 'adapter'})"
    checkpoints = run_dir / "checkpoints"
    saved = sorted(p.name for p in checkpoints.iterdir()) if checkpoints.is_dir() else []
    if saved or (run_dir / "logs" / "train_log.jsonl").is_file():
        return f"an interrupted run ({', '.join(saved) or 'logs/train_log.jsonl'} in {run_dir})"
    return None


def move_aside(run_dir: Path) -> Path:
    """train.overwrite=true: every file of the earlier run moves into run_dir/replaced-<time>/ (a rename, no
    copy), so the new run starts in an empty directory and nothing trained is deleted."""
    target = run_dir / f"{REPLACED_PREFIX}{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    target.mkdir()
    for path in sorted(run_dir.iterdir()):
        if path.name != LOCK and not path.name.startswith(REPLACED_PREFIX):
            os.replace(path, target / path.name)
    log.warning("train.overwrite=true: the earlier run in %s moved to %s (delete it when you no longer need it)",
                run_dir, target)
    return target


def check_training_target(cfg, run_dir: Path) -> None:
    """Training in a directory that already holds a run needs train.resume or train.overwrite."""
    if cfg.train.resume and cfg.train.overwrite:
        raise ConfigError("train.resume and train.overwrite=true contradict each other: resume continues the "
                          "run in this directory, overwrite starts it over; choose one")
    found = previous_run(run_dir)
    if found is None or cfg.train.resume:
        return
    if cfg.train.overwrite:
        move_aside(run_dir)
        return
    raise RunDirError(f"{run_dir} already holds {found}. To continue it, add train.resume=auto; to train again "
                      "from the start, add train.overwrite=true (its files move to "
                      f"{run_dir}/{REPLACED_PREFIX}<time>/), or choose another hydra.run.dir")


def check_adapter_target(cfg, run_dir: Path) -> None:
    """export / push assemble run_dir/adapter from adapter=PATH: never over another adapter."""
    target = Path(run_dir) / "adapter"
    if not cfg.adapter or not target.is_dir() or not any(target.iterdir()):
        return
    weights = "adapter_model.safetensors"
    same = Path(cfg.adapter).resolve() == target.resolve() or (
        (target / weights).is_file() and (Path(cfg.adapter) / weights).is_file()
        and filecmp.cmp(target / weights, Path(cfg.adapter) / weights, shallow=False))  # an earlier copy of it
    if not same:
        raise RunDirError(f"{target} already holds an adapter, and adapter={cfg.adapter} is another one: "
                          "run in a fresh directory (drop hydra.run.dir, or name a new one)")


def check(cfg, run_dir: Path) -> None:
    if "train" in cfg.stages:
        check_training_target(cfg, run_dir)
    elif {"export", "push"} & set(cfg.stages):
        check_adapter_target(cfg, run_dir)


@contextmanager
def claimed(cfg, run_dir: Path):
    """Hold `run_dir` for the block, after checking that this command may write there (rank 0 decides for the
    whole torchrun / accelerate job; the other ranks write nothing a second run could clash with)."""
    if not is_main_process():
        yield
        return
    acquire(run_dir)
    try:
        check(cfg, run_dir)
        yield
    finally:
        release(run_dir)


def swap_in(new: Path, final: Path) -> None:
    """Replace the folder `final` by the complete folder `new`: renames only, so a reader finds the old folder
    or the new one, never a mix of their files."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency
    Callback = object


class ClaimRunDir(Callback):
    """Hydra callback (conf/base.yaml): claim the run directory before Hydra writes `.hydra/` into it."""

    def on_run_start(self, config, **kwargs) -> None:
        from omegaconf import OmegaConf

        self.run_dir = Path(OmegaConf.select(config, "hydra.run.dir"))
        if not is_main_process():
            return
        try:
            acquire(self.run_dir)
            check(config, self.run_dir)
        except UserError as err:
            release(self.run_dir)
            # Hydra would print its own traceback for an exception raised here: say it in one line instead.
            raise SystemExit(f"lora_llava: {err}") from None

    def on_run_end(self, config, **kwargs) -> None:
        if is_main_process():
            release(self.run_dir)

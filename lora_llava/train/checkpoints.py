"""Checkpoints a resume can trust: written under a temporary name, committed by one rename, and checked against
a manifest of their files' sizes before `train.resume` uses them.

A kill while a checkpoint is written leaves `checkpoints/.incomplete-checkpoint-N/`, never a `checkpoint-N`
that looks whole. A `checkpoint-N` damaged later (a copy cut short, a full disk) fails the manifest check and
`train.resume=auto` falls back to the newest one that passes, saying which one it skipped and why.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from lora_llava.errors import ConfigError, MissingPathError

log = logging.getLogger("lora_llava")

MANIFEST = "lora_llava_checkpoint.json"
STAGING_PREFIX = ".incomplete-"
_NAME = re.compile(r"^checkpoint-(\d+)$")
# Without a manifest (a checkpoint from plain transformers, say) at least the Trainer's state must be there; the
# weight and optimizer files differ between single-GPU, FSDP and DeepSpeed checkpoints.
REQUIRED = ("trainer_state.json",)


def checkpoint_step(path: Path) -> int | None:
    match = _NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def staging_root(checkpoints_dir: Path, step: int) -> Path:
    """Where the trainer writes `checkpoint-<step>/` before it is committed; not matched by `checkpoint-*`."""
    return Path(checkpoints_dir) / f"{STAGING_PREFIX}checkpoint-{step}"


def write_manifest(checkpoint: Path, step: int, world_size: int) -> None:
    files = {p.relative_to(checkpoint).as_posix(): p.stat().st_size
             for p in sorted(checkpoint.rglob("*")) if p.is_file() and p.name != MANIFEST}
    manifest = {"step": step, "world_size": world_size, "files": files}
    (checkpoint / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def commit(staged: Path, final: Path, step: int, world_size: int) -> Path:
    """Seal `staged` with its manifest and rename it to `final` (same filesystem, so the rename is atomic)."""
    write_manifest(staged, step, world_size)
    if final.exists():  # the same step saved again after a resume from an earlier checkpoint
        shutil.rmtree(final)
    os.replace(staged, final)
    shutil.rmtree(staged.parent, ignore_errors=True)  # the now empty staging root
    return final


def problem(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from, or None when its manifest and files agree."""
    manifest_path = Path(checkpoint) / MANIFEST
    if not manifest_path.is_file():
        return f"it has no {MANIFEST} (it was cut off while being written, or not written by lora_llava)"
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError) as err:
        return f"its {MANIFEST} is unreadable ({err})"
    for name, size in files.items():
        path = Path(checkpoint) / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} expected (cut off while being written?)"
    return None


def scan(checkpoints_dir: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(complete checkpoints oldest first, [(unusable path, reason)]), including interrupted staging folders."""
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return [], []
    complete, skipped = [], []
    for path in sorted(checkpoints_dir.iterdir()):
        if path.is_dir() and path.name.startswith(STAGING_PREFIX):
            skipped.append((path, "interrupted while being written"))
        elif path.is_dir() and checkpoint_step(path) is not None:
            reason = problem(path)
            (skipped.append((path, reason)) if reason else complete.append(path))
    return sorted(complete, key=checkpoint_step), skipped


def last_good(checkpoints_dir: Path) -> Path | None:
    complete, _ = scan(checkpoints_dir)
    return complete[-1] if complete else None


def resolve_resume(resume: str | None, checkpoints_dir: Path) -> str | None:
    """`train.resume` -> the checkpoint folder to hand to Trainer.train, or None to start from scratch.

    `auto`: the newest complete checkpoint under `checkpoints_dir`, or None (a fresh run) when there is none, so
    a job script can always pass `train.resume=auto`. A PATH must be a usable checkpoint."""
    if not resume:
        return None
    if resume == "auto":
        complete, skipped = scan(checkpoints_dir)
        for path, reason in skipped:
            log.warning("train.resume=auto: skipping %s: %s", path, reason)
        if not complete:
            log.info("train.resume=auto: no complete checkpoint in %s; training from the start", checkpoints_dir)
            return None
        log.info("train.resume=auto: resuming from %s", complete[-1])
        return str(complete[-1])
    return str(check_resume_path(Path(resume)))


def check_resume_path(path: Path) -> Path:
    if not path.is_dir():
        raise MissingPathError(f"train.resume={path}: no such checkpoint folder (or use train.resume=auto)")
    reason = problem(path) if (path / MANIFEST).is_file() else None
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if reason or missing:
        why = reason or f"{', '.join(missing)} missing"
        raise ConfigError(f"train.resume={path}: cannot resume from it: {why}. Pick another checkpoint-N folder, "
                         "or use train.resume=auto to take the newest complete one.")
    return path


def rotate(checkpoints_dir: Path, keep: int | None) -> None:
    """Keep the newest `keep` complete checkpoints (train.save_total_limit); drop older ones and leftovers of
    interrupted writes. Checkpoints that fail their check are left for a person to look at."""
    complete, skipped = scan(checkpoints_dir)
    for path, _ in skipped:
        if path.name.startswith(STAGING_PREFIX):
            shutil.rmtree(path, ignore_errors=True)
    if keep is None or keep <= 0:
        return
    for path in complete[:-keep]:
        log.info("removing %s (train.save_total_limit=%d)", path, keep)
        shutil.rmtree(path, ignore_errors=True)

"""Checkpoints a resume can trust: written under a temporary name, committed by one rename, and checked against
a manifest of their files' sizes before `train.resume` uses them.

A kill while a checkpoint is written leaves `checkpoints/.incomplete-checkpoint-N/`, never a `checkpoint-N`
that looks whole. A `checkpoint-N` damaged later (a copy cut short, a full disk, bytes changed in place) fails
the manifest's size or hash check and `train.resume=auto` falls back to the newest one that passes, saying
which one it skipped and why. Files are never loaded with pickle's unsafe mode, nor is that ever suggested.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

from lora_llava.errors import UserError

log = logging.getLogger("lora_llava")


class CheckpointError(UserError, ValueError):
    """train.resume names a folder that cannot be resumed from."""

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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(checkpoint: Path, step: int, world_size: int) -> None:
    # Sizes catch a file cut short; hashes catch one damaged in place (same size), checked before a resume.
    paths = [p for p in sorted(checkpoint.rglob("*")) if p.is_file() and p.name != MANIFEST]
    files = {p.relative_to(checkpoint).as_posix(): p.stat().st_size for p in paths}
    sha256 = {p.relative_to(checkpoint).as_posix(): _sha256(p) for p in paths}
    manifest = {"step": step, "world_size": world_size, "files": files, "sha256": sha256}
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


def loads(path: Path) -> str | None:
    """Why the file at `path` does not load, or None. Torch files are read with weights_only=True, as the
    Trainer reads them; their error text is not passed on (it suggests turning that safety off)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            load_file(path)
        elif path.suffix in (".pt", ".pth", ".bin"):
            import torch

            torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".json":
            json.loads(path.read_text())
    except Exception as err:  # noqa: BLE001 - any failure to read means the file cannot be resumed from
        return f"{path.name} does not load ({type(err).__name__}): the file is damaged"
    return None


def verify(checkpoint: Path) -> str | None:
    """problem(), then the contents: the manifest's hashes when it has them, else every file loaded once."""
    reason = problem(checkpoint)
    if reason:
        return reason
    manifest = json.loads((Path(checkpoint) / MANIFEST).read_text())
    for name in manifest["files"]:
        path = Path(checkpoint) / name
        expected = manifest.get("sha256", {}).get(name)
        if expected and _sha256(path) != expected:
            return f"{name} does not match the hash it was saved with: the file is damaged"
        if not expected and (why := loads(path)):
            return why
    return None


def scan(checkpoints_dir: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(complete checkpoints oldest first, [(unusable path, reason)]), including interrupted staging folders.
    Sizes only: cheap enough for every save; resolve_resume checks contents too."""
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


def last_good(checkpoints_dir: Path, before: int | None = None) -> Path | None:
    """The newest complete checkpoint (at step `before` or earlier, when given)."""
    complete, _ = scan(checkpoints_dir)
    complete = [p for p in complete if before is None or checkpoint_step(p) <= before]
    return complete[-1] if complete else None


def newest_loadable(checkpoints_dir: Path) -> Path | None:
    """The newest checkpoint whose files pass verify(); the ones skipped on the way are named in the log."""
    complete, skipped = scan(checkpoints_dir)
    for path, reason in skipped:
        log.warning("train.resume=auto: skipping %s: %s", path, reason)
    for path in reversed(complete):
        reason = verify(path)
        if reason is None:
            return path
        log.warning("train.resume=auto: skipping %s: %s; trying the one before", path, reason)
    return None


def abandon_newer(checkpoint: Path) -> None:
    """Resuming from an older checkpoint: the newer ones belong to the abandoned continuation. Renamed out of
    `checkpoint-*`, so that a later train.resume=auto can never pick one of them up."""
    for path in Path(checkpoint).parent.iterdir():
        step = checkpoint_step(path)
        if step is not None and step > checkpoint_step(checkpoint):
            target = path.with_name(f"abandoned-{path.name}")
            shutil.rmtree(target, ignore_errors=True)
            os.replace(path, target)
            log.warning("resuming from %s: the later %s is renamed %s (delete it when no longer needed)",
                        checkpoint, path.name, target.name)


def resolve_resume(resume: str | None, checkpoints_dir: Path) -> str | None:
    """`train.resume` -> the checkpoint folder to hand to Trainer.train, or None to start from scratch.

    `auto`: the newest checkpoint under `checkpoints_dir` whose files load, or None (a fresh run) when there is
    none, so a job script can always pass `train.resume=auto`. A PATH must be a usable checkpoint."""
    if not resume:
        return None
    if resume == "auto":
        found = newest_loadable(checkpoints_dir)
        if found is None:
            log.info("train.resume=auto: no complete checkpoint in %s; training from the start", checkpoints_dir)
            return None
        log.info("train.resume=auto: resuming from %s", found)
        return str(found)
    path = check_resume_path(Path(resume))
    if checkpoint_step(path) is not None:
        abandon_newer(path)
    return str(path)


def check_resume_path(path: Path) -> Path:
    if not path.is_dir():
        raise CheckpointError(f"train.resume={path}: no such checkpoint folder (or use train.resume=auto)")
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if missing:
        why = f"{', '.join(missing)} missing"
    elif (path / MANIFEST).is_file():
        why = verify(path)
    else:  # not written by lora_llava: at least every file must load
        why = next(filter(None, (loads(p) for p in sorted(path.rglob("*")) if p.is_file())), None)
    if why:
        raise CheckpointError(f"train.resume={path}: cannot resume from it: {why}. Pick another checkpoint-N folder, "
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

"""What a process needs to know when `torchrun` or `accelerate launch` starts several copies of the command.

Each copy composes the config itself, so every choice that could differ between them (above all Hydra's
timestamped run directory) must be pinned before composition; and only rank 0 writes files people read.
"""

from __future__ import annotations

import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def launch_overrides(argv: list[str]) -> list[str]:
    """Hydra overrides for this process, or SystemExit when the processes could not agree on a run directory.

    Hydra names the run directory after the clock when the config is composed, and each process composes its
    own, so they would write to different folders. The user names one (`hydra.run.dir=...`), which a later
    `train.resume=auto` needs anyway. Ranks other than 0 write neither `.hydra/` nor the main log."""
    if world_size() <= 1:
        return []
    multirun = any(a in ("-m", "--multirun") for a in argv)
    key = "hydra.sweep.dir=" if multirun else "hydra.run.dir="
    if not any(a.startswith(key) for a in argv):
        raise SystemExit(
            f"lora_llava: started as process {rank()} of {world_size()} (torchrun / accelerate launch). Each process "
            f"composes its own config, and Hydra's default run directory carries a timestamp that would differ "
            f"between them: name one directory for all of them, e.g. `{key}outputs/my_run`.")
    if is_main_process():
        return []
    return ["hydra.output_subdir=null", f"hydra.job.name=rank{rank()}"]


def any_process(flag: bool, device) -> bool:
    """True on every process when `flag` is True on any of them (a no-op outside distributed training)."""
    import torch

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    tensor = torch.tensor([1 if flag else 0], device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return bool(tensor.item())

"""Resuming with changed settings: each checkpoint carries the config that trained it; a resume compares the
new config with it and refuses changes the user did not list in `train.resume_changes`. Listed changes take
effect: a new learning rate is applied to the optimizer and to the scheduler loaded from the checkpoint.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lora_llava.errors import ConfigError

log = logging.getLogger("lora_llava")

CONFIG_FILE = "lora_llava_config.json"
COMPARED = ("model", "quant", "peft", "data", "train")
# Changes that alter neither the trained weights nor the data: no need to list them.
FREE = {"train.resume", "train.resume_changes", "train.overwrite", "train.logging_steps", "train.save_steps",
        "train.save_total_limit", "train.eval_steps", "train.report_to", "train.not_learning_steps",
        "data.num_workers", "data.image_cache", "data.image_cache_dir", "data.image_cache_gb",
        "train.eval_metric", "train.eval_metric_limit", "train.best_by", "train.patience"}
# Changes a resume can honour. The learning rates are applied here; the others are read afresh by the Trainer.
ALLOWED = ("learning_rate", "projector_learning_rate", "max_grad_norm", "epochs", "max_steps")
LEARNING_RATES = {"learning_rate": "adapters", "projector_learning_rate": "projector"}
GROUP_ORDER = ("adapters", "projector")  # optimizer_param_groups' order, for checkpoints without group names


def training_config(cfg) -> dict:
    from omegaconf import OmegaConf

    return {group: OmegaConf.to_container(cfg[group], resolve=True) for group in COMPARED}


def save_config(config: dict, checkpoint: Path) -> None:
    (Path(checkpoint) / CONFIG_FILE).write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")


def _flatten(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return flat


def changed_keys(old: dict, new: dict) -> dict[str, tuple]:
    """dotted key -> (checkpoint's value, new value), for keys that matter to training."""
    old, new = _flatten(old), _flatten(new)
    keys = sorted(set(old) | set(new))
    return {k: (old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k) and k not in FREE}


def _short(key: str) -> str:
    return key.removeprefix("train.")


def check_resume_config(cfg, checkpoint: Path) -> dict[str, tuple]:
    """The changes from `checkpoint`'s config that this resume applies, or ConfigError listing the changes
    that are not allowed (with the override that allows them, when a resume can honour them)."""
    path = Path(checkpoint) / CONFIG_FILE
    if not path.is_file():
        log.warning("%s has no %s (written before lora_llava recorded it): the config cannot be compared",
                    checkpoint, CONFIG_FILE)
        return {}
    changes = changed_keys(json.loads(path.read_text()), training_config(cfg))
    listed = {_short(k) for k in cfg.train.resume_changes}
    unknown = sorted(listed - set(ALLOWED))
    if unknown:
        raise ConfigError(f"train.resume_changes: {', '.join(unknown)} cannot change on resume (a resume can "
                          f"change {', '.join(ALLOWED)}); to train with it, start over with train.overwrite=true")
    refused = {k: v for k, v in changes.items() if _short(k) not in listed}
    if refused:
        shown = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
        fixable = sorted(_short(k) for k in refused if _short(k) in ALLOWED)
        hint = (f" To resume with the new value, add train.resume_changes=[{','.join(sorted(listed | set(fixable)))}]"
                if len(fixable) == len(refused) else
                " Those cannot change within a run: resume with the checkpoint's values, or start over with "
                "train.overwrite=true")
        raise ConfigError(f"train.resume={cfg.train.resume}: the config differs from {checkpoint}'s: {shown}."
                          f"{hint}.")
    return changes


def apply_learning_rates(optimizer, scheduler, changes: dict[str, tuple]) -> list[dict]:
    """After the optimizer and scheduler states are loaded: scale each changed group's rate, its scheduled
    base and the scheduler's last value, so the schedule continues at the new rate. Returns what changed."""
    applied = []
    for key, (old, new) in changes.items():
        group_name = LEARNING_RATES.get(_short(key))
        for index, group in enumerate(optimizer.param_groups):
            if group_name is None or group.get("name", GROUP_ORDER[min(index, 1)]) != group_name:
                continue
            base = scheduler.base_lrs[index] if scheduler is not None else group.get("initial_lr", old)
            factor = new / base
            group["lr"] *= factor
            group["initial_lr"] = new
            if scheduler is not None:
                scheduler.base_lrs[index] = new
                scheduler._last_lr[index] *= factor
            applied.append({"key": key, "group": group_name, "from": base, "to": new, "lr_now": group["lr"]})
            log.info("train.resume_changes: %s learning rate %g -> %g (now %g on the schedule)", group_name, base,
                     new, group["lr"])
    return applied

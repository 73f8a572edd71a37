"""Config checks that need more than a type: no keys beyond the schemas, choices among names, ranges that can
train, stages that exist. Run on the composed config before anything is loaded; each error names the key."""

from __future__ import annotations

import warnings
from dataclasses import MISSING, fields, is_dataclass
from typing import Any

from lora_llava.config import STAGES, Config
from lora_llava.errors import ConfigError

SCORERS = ("exact", "scienceqa", "qa", "judge")


def check_config(cfg) -> None:
    """Checks that need more than a type: no keys beyond the schema, choices among names, ranges. Raises
    ConfigError naming the key (a learning rate of 0 only warns)."""
    check_known_keys(cfg)
    check_choices(cfg)
    check_ranges(cfg)
    if not cfg.stages:
        raise ConfigError(f"stages is empty: nothing to run; choose from {', '.join(STAGES)}, e.g. stages=[train,eval]")
    if cfg.model.trust_remote_code and not cfg.model.revision:
        raise ConfigError("model.trust_remote_code=true needs model.revision pinned to a commit")
    if "push" in cfg.stages and not cfg.hub.dry_run and not cfg.hub.repo_id:
        raise ConfigError("stages has push but hub.repo_id is not set: pass hub.repo_id=ORG/NAME (or hub.dry_run=true)")


def check_choices(cfg) -> None:
    choices = {
        "quant.method": ("none", "nf4", "int8"),
        "peft.method": ("lora", "none"),
        "peft.scope": ("language_model", "all"),
        "data.on_error": ("raise", "skip"),
        "data.image_placement": ("keep", "front"),
        "hub.what": ("adapter", "merged"),
        "export.dtype": ("bfloat16", "float16", "float32"),
        "eval.scorer": SCORERS,
        "model.dtype": ("auto", "bfloat16", "float16", "float32"),
        "model.base_check": ("refuse", "warn"),
    }
    for key, allowed in choices.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")
    for stage in cfg.stages:
        if stage not in STAGES:
            raise ConfigError(f"stages: unknown stage {stage!r}; choose from {', '.join(STAGES)}")


# Keys that must be positive (null allowed where the schema says Optional: it means "not set").
POSITIVE = ("train.batch_size", "train.gradient_accumulation_steps", "train.logging_steps", "train.save_steps",
            "train.save_total_limit", "train.eval_steps", "eval.batch_size", "eval.max_new_tokens", "eval.limit",
            "data.max_length", "data.limit", "peft.r", "peft.lora_alpha", "data.synthetic.n_train",
            "data.synthetic.n_eval", "plan.gpu_memory_gb", "plan.seq_len")
FRACTIONS = ("data.val_fraction", "data.max_skip_fraction", "peft.lora_dropout")  # in [0, 1)
NON_NEGATIVE = ("train.warmup_steps", "train.weight_decay", "train.max_grad_norm", "train.projector_learning_rate",
                "data.image_cache_gb", "plan.cuda_overhead_gb")


def check_ranges(cfg) -> None:
    for key in POSITIVE:
        value = _get(cfg, key)
        if value is not None and value <= 0:
            raise ConfigError(f"{key}={value} must be a positive number")
    for key in FRACTIONS:
        value = _get(cfg, key)
        if not 0 <= value < 1:
            raise ConfigError(f"{key}={value} must be a fraction in [0, 1)")
    for key in NON_NEGATIVE:
        if _get(cfg, key) < 0:
            raise ConfigError(f"{key}={_get(cfg, key)} must not be negative")
    if cfg.export.tolerance is not None and cfg.export.tolerance <= 0:
        raise ConfigError(f"export.tolerance={cfg.export.tolerance} must be positive (or null: per dtype)")
    check_steps(cfg.train)


def check_steps(train) -> None:
    """transformers' conventions: max_steps=-1 means 'train.epochs decide'; anything else must be positive."""
    if train.max_steps == 0 or train.max_steps < -1:
        raise ConfigError(f"train.max_steps={train.max_steps} must be positive, or -1 to let train.epochs decide")
    if train.max_steps == -1 and train.epochs <= 0:
        raise ConfigError(f"train.epochs={train.epochs} must be positive (or set train.max_steps)")
    if train.learning_rate < 0:
        raise ConfigError(f"train.learning_rate={train.learning_rate} must not be negative")
    if train.learning_rate == 0:
        warnings.warn("train.learning_rate=0: the adapters will not change from their initialisation",
                      stacklevel=3)


def _get(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def schema_at(path: list[str]):
    """The dataclass behind the config node at `path` (e.g. ["data", "synthetic"]), or None for a free dict."""
    schema: Any = Config
    for part in path:
        sub = next((f for f in fields(schema) if f.name == part), None) if schema else None
        default = sub.default_factory() if sub is not None and sub.default_factory is not MISSING else None
        schema = type(default) if is_dataclass(default) else None
    return schema


def unknown_key_message(full_key: str, source: str | None = None) -> str:
    """One message for a key no schema has, whether misspelt (peft.rnk=8) or added (+peft.rnk=8); `source`: where
    it was set (config_source)."""
    *path, key = full_key.split(".")
    schema = schema_at(path)
    known = ", ".join(f.name for f in fields(schema)) if schema else ""
    where = ".".join(path) or "the root config"
    return (f"unknown key {full_key!r}: {where} has no key {key!r}; its keys are {known}. "
            "Check the spelling (a key cannot be added with +)" + (f" (set {source})" if source else ""))


def check_known_keys(cfg, path: tuple[str, ...] = ()) -> None:
    """Every key of `cfg` is in its schema. Hydra lets `+foo=1` add a key past the schema's struct flag."""
    schema = schema_at(list(path))
    if schema is None:
        return
    known = {f.name for f in fields(schema)}
    for key in cfg:
        full = ".".join((*path, str(key)))
        if key not in known:
            if not path and key == "hydra":
                continue  # Hydra's own node, present when a config is composed with return_hydra_config
            # Composition refuses unknown keys from files, so one that got here was added on the command line.
            raise ConfigError(unknown_key_message(full, f"on the command line: {full}"))
        if schema_at([*path, str(key)]) is not None:
            check_known_keys(cfg[key], (*path, str(key)))


def describe_config_error(err: BaseException) -> str:
    """A Hydra/OmegaConf composition error as one actionable line naming the key."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    if isinstance(err, MissingConfigException):
        return missing_config_message(err)
    cause = err
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__ or cause.__context__
    full_key = getattr(cause, "full_key", None)
    source = config_source(err)
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and full_key and "not in" in str(cause):
        return unknown_key_message(full_key, source)
    if cause is not None and full_key:
        return f"{full_key}: {str(cause).splitlines()[0]}" + (f" (set {source})" if source else "")
    return str(err)


def config_source(err: BaseException) -> str | None:
    """Where the bad value was set, read off Hydra's composition error: "in FILE" (`In 'peft/lora'`: the file,
    found in the search path) or "on the command line: OVERRIDE"."""
    import re

    seen = err
    while seen is not None:
        first = (str(seen).splitlines() or [""])[0]
        named = re.match(r"In '([^']+)'", first)
        if named:
            return f"in {config_file(named.group(1))}"
        override = re.match(r"(?:Error merging override (.+)|Could not override '([^']+)')", first)
        if override:
            return f"on the command line: {override.group(1) or override.group(2)}"
        seen = seen.__cause__ or seen.__context__
    return None


def config_file(name: str) -> str:
    """The file Hydra composed as `name` (e.g. `my_domain`, `peft/lora`): --config-dir, recipes/, then conf/."""
    import sys
    from pathlib import Path

    from lora_llava.config import config_dirs

    argv = sys.argv[1:]
    given = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--config-dir", "-cd")]
    given += [a.split("=", 1)[1] for a in argv if a.startswith("--config-dir=")]
    conf_dir, recipes_dir = config_dirs()
    for folder in [*map(Path, given), Path(recipes_dir), Path(conf_dir)]:
        path = folder / f"{name}.yaml"
        if path.is_file():
            return str(path)
    return f"config {name!r}"


def missing_config_message(err) -> str:
    """A recipe or group option that does not exist, with the ones that do (Hydra's search path left out)."""
    from lora_llava.config import list_recipes

    lines = str(err).split("Config search path")[0].splitlines()
    text = "\n".join(line for line in lines if line.strip() != "schema")  # our typed node, not an option
    if text.startswith("Cannot find primary config"):
        return (f"recipe {err.missing_cfg_file!r} not found; shipped recipes: {', '.join(list_recipes())} "
                "(a recipe of your own: --config-dir DIR recipe=NAME)")
    return text

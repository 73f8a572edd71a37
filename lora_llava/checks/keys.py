"""Unknown keys and composition errors: a key no schema has (misspelt, or added with `+`) and Hydra's errors
turned into one line naming the key and where it was set (the recipe or group file, or the override)."""

from __future__ import annotations

from dataclasses import MISSING, fields, is_dataclass
from typing import Any

from lora_llava.config import Config
from lora_llava.errors import ConfigError


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

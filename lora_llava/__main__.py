"""`python -m lora_llava recipe=NAME [overrides]`: compose the recipe with Hydra, validate it, run its stages."""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

from lora_llava.checks import describe_config_error
from lora_llava.config import config_dirs, list_recipes, register_schemas
from lora_llava.distributed import launch_overrides
from lora_llava.errors import ConfigError, run_entry

PROG = "lora_llava"


# Hydra's options that take a value (`--config-dir DIR`); a value never holds "=" where an override would.
VALUE_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--cfg", "-c", "--package", "-p",
               "--info", "-i", "--experimental-rerun")


def _split_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra's options with their values, overrides): Hydra reads overrides only as one unbroken run of
    arguments, so an option between them (`--config-dir DIR` after an override) would end the list early."""
    flags, overrides, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-"):
            overrides.append(arg)
        else:
            takes = arg in VALUE_FLAGS and i + 1 < len(argv) and "=" not in argv[i + 1]
            flags += argv[i: i + 1 + takes]
            i += takes
        i += 1
    return flags, overrides


def _recipe(overrides: list[str]) -> str | None:
    return next((a.split("=", 1)[1] for a in overrides if a.startswith("recipe=")), None)


def _translate_argv(argv: list[str]) -> list[str]:
    """`recipe=NAME` selects the primary config (recipes/NAME.yaml); conf/ joins the search path."""
    conf_dir, _ = config_dirs()
    flags, overrides = _split_flags(argv)
    recipe = _recipe(overrides)
    overrides = [a for a in overrides if not a.startswith("recipe=")]
    if recipe is None and not any(a.startswith(("--config-name", "-cn", "--hydra-help")) for a in argv):
        raise ConfigError(f"choose a recipe, e.g. `recipe=smoke`. Shipped recipes: {', '.join(list_recipes())} "
                          "(--help lists recipes, config groups and stages)")
    head = ["--config-name", recipe] if recipe is not None else []
    # Under torchrun / accelerate launch every process composes its own config: pin what must agree.
    return [*flags, *head, f"hydra.searchpath=[file://{conf_dir}]", *overrides, *launch_overrides(argv)]


def _check_printed_config(argv: list[str]) -> None:
    """`--cfg job` prints the composed config and runs nothing (Hydra stops before our entry): check it as a run
    would first, so a config that prints is one a run accepts (a `+key` typo is refused here too)."""
    from lora_llava.checks import check_values
    from lora_llava.config import compose

    flags, overrides = _split_flags(argv)
    if not any(f in ("--cfg", "-c") or f.startswith("--cfg=") for f in flags):
        return
    if any(f in ("-m", "--multirun") for f in flags):
        raise ConfigError("--cfg prints one composed config and -m runs a sweep: use one of them (to print one "
                          "point of the sweep, drop -m and give each swept key one value)")
    recipe = _recipe(overrides)
    config_dir = next((flags[i + 1] for i, f in enumerate(flags[:-1]) if f in ("--config-dir", "-cd")), None)
    if recipe is not None:
        check_values(compose(recipe, [o for o in overrides if not o.startswith(("recipe=", "hydra."))], config_dir))


def _main() -> None:
    if any(a in ("--help", "-h") for a in sys.argv[1:]):
        from lora_llava.help import usage

        print(usage())
        return
    register_schemas()
    _, recipes_dir = config_dirs()
    _check_printed_config(sys.argv[1:])
    sys.argv = [sys.argv[0], *_translate_argv(sys.argv[1:])]
    # Let errors leave hydra.main as they are, so expected ones end in one line and bugs keep their traceback.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")

    @hydra.main(config_path=str(recipes_dir), config_name=None, version_base="1.3")
    def _entry(cfg: DictConfig) -> None:
        from hydra.core.hydra_config import HydraConfig

        from lora_llava.run import run

        # Caught here, not by main(): Hydra would first print the job's overrides as an error of its own.
        run_entry(PROG, lambda: run(cfg, HydraConfig.get().runtime.output_dir))

    _entry()


def main() -> None:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    run_entry(PROG, _main, (HydraException, OmegaConfBaseException), describe_config_error)


if __name__ == "__main__":
    main()

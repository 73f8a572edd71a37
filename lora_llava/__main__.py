"""`python -m lora_llava recipe=NAME [overrides]`: compose the recipe with Hydra, validate it, run its stages."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from lora_llava.config import config_dirs, list_recipes, register_schemas
from lora_llava.distributed import launch_overrides


def _translate_argv(argv: list[str]) -> list[str]:
    """`recipe=NAME` selects the primary config (recipes/NAME.yaml); conf/ joins the search path."""
    conf_dir, _ = config_dirs()
    out, recipe, flags = [], None, []
    for arg in argv:
        if arg.startswith("recipe="):
            recipe = arg.split("=", 1)[1]
        elif arg in ("-m", "--multirun"):
            flags.append(arg)  # a flag amid the overrides would split them (`python -m lora_llava -m recipe=..`)
        else:
            out.append(arg)
    if recipe is None and not any(a.startswith(("--config-name", "-cn", "--help", "-h", "--hydra-help")) for a in argv):
        sys.exit(f"lora_llava: choose a recipe, e.g. `recipe=smoke`. Shipped recipes: {', '.join(list_recipes())}")
    # Overrides must stay contiguous for Hydra's argument parser, so ours goes first.
    head = ["--config-name", recipe] if recipe is not None else []
    # Under torchrun / accelerate launch every process composes its own config: pin what must agree.
    return [*flags, *head, f"hydra.searchpath=[file://{conf_dir}]", *out, *launch_overrides(argv)]


def main() -> None:
    register_schemas()
    _, recipes_dir = config_dirs()
    sys.argv = [sys.argv[0], *_translate_argv(sys.argv[1:])]

    @hydra.main(config_path=str(recipes_dir), config_name=None, version_base="1.3")
    def _entry(cfg: DictConfig) -> None:
        from hydra.core.hydra_config import HydraConfig

        from lora_llava.run import run

        run(cfg, HydraConfig.get().runtime.output_dir)

    _entry()


if __name__ == "__main__":
    main()

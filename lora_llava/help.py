"""`python -m lora_llava --help`: what a user can choose, read from what is shipped (recipes, config groups,
stages), so the help never lists an option that does not exist."""

from __future__ import annotations

from lora_llava.config import STAGES, config_dirs, list_recipes
from lora_llava.errors import DEBUG_ENV

STAGE_HELP = {
    "generate": "write LLaVA instruction data from your annotations through an OpenAI-compatible endpoint "
                "(endpoint.*); writes generated/",
    "validate": "check every sample with the processor alone (no weights); data_report.md, non-zero exit if "
                "training would stop",
    "plan": "estimate GPU memory for the config; the largest batch that fits",
    "train": "LoRA/QLoRA training; writes adapter/, checkpoints/, logs/",
    "eval": "greedy answers for eval.split, scored by eval.scorer; writes eval/",
    "compare": "the base model (adapters off) vs the adapted one on the same questions; eval/compare.md",
    "export": "the Hub-ready adapter/ folder with its model card; export.merge=true also writes merged/",
    "push": "upload adapter/ (or merged/) to hub.repo_id; hub.dry_run=true stages it only",
}


def config_groups() -> dict[str, list[str]]:
    """group -> its options (the YAML files of conf/GROUP/)."""
    conf_dir, _ = config_dirs()
    return {d.name: sorted(p.stem for p in d.glob("*.yaml"))
            for d in sorted(conf_dir.iterdir()) if d.is_dir() and any(d.glob("*.yaml"))}


def usage() -> str:
    groups = config_groups()
    presets = groups.pop("accelerate", [])
    lines = [
        "usage: python -m lora_llava recipe=NAME [KEY=VALUE ...] [GROUP=OPTION ...] [--cfg job] [-m]",
        "",
        "Compose a recipe with Hydra, check it, and run its stages in order (stages=[...] picks them).",
        "",
        f"recipes:  {', '.join(list_recipes())}   (or your own: --config-dir DIR recipe=NAME)",
        "",
        "config groups (GROUP=OPTION swaps one, e.g. quant=none; GROUP.KEY=VALUE sets a key):",
        *[f"  {group:<8} {', '.join(options)}" for group, options in groups.items()],
        "",
        "stages (stages=[train,eval] runs those, in that order):",
        *[f"  {name:<9} {STAGE_HELP[name]}" for name in STAGES],
        "",
        "examples:",
        "  python -m lora_llava recipe=smoke                       offline, CPU, tiny model",
        "  python -m lora_llava recipe=scienceqa peft.r=64          override any key",
        "  python -m lora_llava recipe=scienceqa --cfg job          print the composed config",
        "  python -m lora_llava recipe=scienceqa stages=[validate]  check the data only",
        "  python -m lora_llava.predict --help                      ask a trained adapter",
        "",
        f"accelerate presets (accelerate launch --config_file conf/accelerate/NAME.yaml): {', '.join(presets)}",
        f"errors: expected errors print one line; {DEBUG_ENV}=1 shows the full traceback.",
        "Hydra's own flags: --hydra-help.",
    ]
    return "\n".join(lines)

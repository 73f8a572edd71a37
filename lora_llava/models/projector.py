"""The projector alone, as an align run (recipe=align, LLaVA's stage 1) saves it and later runs load it.

`<run>/projector/` holds `projector.safetensors` (the projector's tensors, keyed by their names in the base) and
`projector.json` (the base it was aligned on, the module names and every tensor's shape). `model.projector=DIR`
loads it into the base before adapters go on, refusing a folder made for another base or other shapes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lora_llava.errors import ConfigError
from lora_llava.models.adapters import PROJECTOR_NAMES, is_projector

log = logging.getLogger("lora_llava")

WEIGHTS, INFO = "projector.safetensors", "projector.json"
FORMAT = "lora_llava.projector/1"


def base_identity(model_cfg) -> str:
    """What a projector is tied to: the Hub id, the tiny model's seed, or the local directory."""
    if model_cfg.path == "tiny":
        return f"tiny (seed {model_cfg.seed})"
    path = Path(model_cfg.path)
    return str(path.resolve()) if path.exists() else model_cfg.path


def projector_state(model) -> dict:
    """The projector's tensors of a bare base (no adapters), keyed by their full names."""
    return {name: tensor for name, tensor in model.state_dict().items() if is_projector(name)}


def save_projector(model, out_dir: Path, base: str) -> Path:
    """Write the projector's weights and projector.json to `out_dir`."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in projector_state(model).items()}
    save_file(state, str(out_dir / WEIGHTS), metadata={"format": "pt"})
    info = {"format": FORMAT, "base": base, "modules": list(PROJECTOR_NAMES),
            "shapes": {k: list(v.shape) for k, v in state.items()}}
    (out_dir / INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return out_dir


def read_projector(path: Path) -> tuple[dict, dict]:
    """(projector.json, weights) of a projector folder; a missing or foreign folder is a ConfigError."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / INFO).is_file() or not (path / WEIGHTS).is_file():
        raise ConfigError(f"model.projector={path}: expected {INFO} and {WEIGHTS} there; point it at the "
                          "projector/ folder of an align run (python -m lora_llava recipe=align)")
    info = json.loads((path / INFO).read_text())
    if info.get("format") != FORMAT:
        raise ConfigError(f"model.projector={path}: {INFO} is not a lora_llava projector ({FORMAT})")
    return info, load_file(str(path / WEIGHTS))


def check_base(path: Path, info: dict, base: str) -> None:
    if info["base"] != base:
        raise ConfigError(f"model.projector={path} was aligned on {info['base']}, but model.path is {base}: a "
                          "projector only fits the towers it was aligned with; use that base, or align this one "
                          "(recipe=align)")


def check_projector(model_cfg) -> tuple[dict, dict]:
    """Read model.projector and check it was aligned on model.path; before any weights load, so a wrong folder
    stops a run at its start. Returns (projector.json, weights)."""
    info, weights = read_projector(Path(model_cfg.projector))
    check_base(Path(model_cfg.projector), info, base_identity(model_cfg))
    return info, weights


def check_shapes(path: Path, weights: dict, model) -> None:
    """The saved projector has exactly this base's projector tensors, with the same shapes."""
    expected = {k: list(v.shape) for k, v in projector_state(model).items()}
    found = {k: list(v.shape) for k, v in weights.items()}
    if found != expected:
        diff = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))
        raise ConfigError(f"model.projector={path} does not fit this base's projector: "
                          + "; ".join(f"{k} is {found.get(k)} there, {expected.get(k)} here" for k in diff[:3]))


def load_saved(model, path: str | Path, base: str) -> None:
    """Load the projector folder `path` (an align run's projector/ or checkpoint) into the bare base `model`."""
    info, weights = read_projector(Path(path))
    check_base(Path(path), info, base)
    check_shapes(Path(path), weights, model)
    model.load_state_dict(weights, strict=False)  # only the projector's tensors; check_shapes matched every one
    log.info("projector loaded from %s (aligned on %s)", path, info["base"])


def load_projector(model, model_cfg) -> None:
    """Load model.projector into `model` (the bare base, before adapters) in place, after checking it fits."""
    load_saved(model, model_cfg.projector, base_identity(model_cfg))

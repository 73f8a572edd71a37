"""export.vllm_lora=true: the adapter as a language-model-only LoRA folder that vLLM loads per request
(`vllm serve BASE --enable-lora --lora-modules NAME=<run>/vllm_lora`), so one served base carries many adapters.

vLLM's LoRA covers linear layers of the language model only. An adapter that also trained the projector
(peft.train_projector=true, a modules_to_save copy), LoRA on the vision tower or DoRA cannot be expressed that way:
then serve the merged folder (`vllm serve <run>/merged`). checks.check_values refuses the first case before
training; this module refuses the others by name.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lora_llava.errors import ConfigError

log = logging.getLogger("lora_llava")


def impossible(adapter_dir: Path, config: dict, keys: list[str]) -> str | None:
    """Why `adapter_dir` cannot become a vLLM LoRA folder, or None."""
    from lora_llava.models.adapters import vllm_lora_name

    if config.get("modules_to_save"):
        return f"it trains {', '.join(config['modules_to_save'])} as well (peft.train_projector=true)"
    if config.get("use_dora"):
        return "it is a DoRA adapter, which vLLM's LoRA does not load"
    outside = [k for k in keys if vllm_lora_name(k) is None]
    if outside:
        return f"{len(outside)} of its tensors are outside the language model (e.g. {outside[0]}; peft.scope=all)"
    return None


def export_vllm_lora(adapter_dir: Path, out_dir: Path, target_modules) -> Path:
    """Write `out_dir` (adapter_config.json, adapter_model.safetensors, README.md) from a peft adapter folder."""
    from safetensors.torch import load_file, save_file

    from lora_llava.models.adapters import vllm_lora_name

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    tensors = load_file(adapter_dir / "adapter_model.safetensors")
    why = impossible(adapter_dir, config, list(tensors))
    if why:
        raise ConfigError(f"export.vllm_lora=true: {adapter_dir} cannot be loaded as a vLLM LoRA because {why}. "
                          "Serve the merged folder instead: export.merge=true, then `vllm serve <run>/merged`")
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({vllm_lora_name(k): v.contiguous() for k, v in tensors.items()}, out_dir / "adapter_model.safetensors",
              metadata={"format": "pt"})
    # vLLM matches plain module names; our regex (which keeps LoRA out of CLIP) is for peft only.
    config.update(target_modules=sorted(target_modules), modules_to_save=None)
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out_dir / "README.md").write_text(
        "# LoRA for vLLM\n\nThe language-model LoRA of `../adapter`, with tensor names in vLLM's module layout "
        "for LLaVA (`language_model.model.layers.*`). Serve it on the base model:\n\n"
        f"```bash\nvllm serve {config.get('base_model_name_or_path') or 'BASE'} --enable-lora "
        f"--max-lora-rank {config['r']} --lora-modules adapter={out_dir.resolve()}\n```\n")
    log.info("vLLM LoRA folder: %s (%d tensors)", out_dir, len(tensors))
    return out_dir

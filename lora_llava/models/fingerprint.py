"""A fingerprint of the base model an adapter was trained on, kept in the adapter folder and compared when the
adapter is loaded: LoRA weights applied to another base load without a word from peft and give nonsense.

Cheap by design: a few shape fields of the config and a hash of a sample of rows of the input and output
embeddings. Those are never quantized (bitsandbytes leaves embeddings alone, and lm_head is skipped), and the
rows are hashed in bfloat16, so the same base loaded in fp32, bf16 or under QLoRA gives the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from lora_llava.errors import UserError

log = logging.getLogger("lora_llava")

FILE = "base_fingerprint.json"
ROWS = 256  # rows sampled evenly from each embedding matrix


class BaseMismatch(UserError):
    """An adapter meets a base model other than the one it was trained on."""


def _rows_digest(weight) -> str:
    import torch

    step = max(1, weight.shape[0] // ROWS)
    rows = weight.detach()[::step].to("cpu", torch.bfloat16).contiguous()
    return hashlib.sha256(rows.view(torch.int16).numpy().tobytes()).hexdigest()


def _whole(model, weight, state_dict):
    """`weight`, or its gathered copy in `state_dict` when the model's parameters are sharded (FSDP)."""
    if state_dict is None:
        return weight
    return state_dict[next(name for name, param in model.named_parameters() if param is weight)]


def fingerprint(model, state_dict=None) -> dict:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    text = base.config.get_text_config()
    config = {"model_type": base.config.model_type, "vocab_size": text.vocab_size,
              "hidden_size": text.hidden_size, "num_hidden_layers": text.num_hidden_layers}
    tensors = {key: _rows_digest(_whole(model, module.weight, state_dict))
               for key, module in (("input_embeddings", base.get_input_embeddings()),
                                   ("output_embeddings", base.get_output_embeddings()))}
    return {"config": config, "tensors": tensors}


def save_fingerprint(model, folder: Path, state_dict=None) -> None:
    """`state_dict`: the gathered full state dict when the model is sharded (FSDP)."""
    write_fingerprint(fingerprint(model, state_dict), folder)


def write_fingerprint(found: dict, folder: Path) -> None:
    (Path(folder) / FILE).write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")


def differences(saved: dict, actual: dict) -> list[str]:
    out = [f"{key} {saved['config'].get(key)} vs {value}" for key, value in actual["config"].items()
           if saved["config"].get(key) != value]
    out += [f"{name} weights differ" for name, digest in actual["tensors"].items()
            if saved["tensors"].get(name) != digest]
    return out


def check_base(base, adapter_dir: Path, model_path: str, mode: str) -> None:
    """Compare `base` with the fingerprint saved beside the adapter. mode: refuse (BaseMismatch) | warn."""
    path = Path(adapter_dir) / FILE
    if not path.is_file():
        log.info("%s has no %s (saved by an older lora_llava, or a checkpoint): the base is not compared",
                 adapter_dir, FILE)
        return
    found = differences(json.loads(path.read_text()), fingerprint(base))
    if not found:
        return
    message = (f"adapter {adapter_dir} was trained on another base than model.path={model_path} "
               f"({'; '.join(found)}). Point model.path at the base it was trained on (its README.md names it)")
    if mode == "warn":
        log.warning("%s; loading it anyway (model.base_check=warn)", message)
        return
    raise BaseMismatch(f"{message}, or pass model.base_check=warn to load it anyway")

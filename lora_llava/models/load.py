"""build_model_and_processor(): a checkpoint of any family (Hub id or local directory) or a tiny random model,
through AutoModelForImageTextToText; the family (models/families.py) comes from its config's model_type."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from lora_llava.errors import ConfigError, MissingPathError, UserError, cannot_load, disk_full_message
from lora_llava.models.base import Family
from lora_llava.models.families import family_for_config
from lora_llava.models.quant import build_quant_config

log = logging.getLogger("lora_llava")

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def resolve_dtype(name: str) -> torch.dtype:
    """`auto`: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    if name != "auto":
        return getattr(torch, name)
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class ModelPathError(UserError):
    """model.path names a local folder that is not there."""


def looks_local(path: str) -> bool:
    """A Hub id is `name` or `org/name`; anything else (absolute, ./, ~, deeper paths) is a local folder."""
    return path.startswith(("/", "./", "../", "~", ".\\")) or path.count("/") > 1 or "\\" in path


def checkpoint_path(model_cfg) -> str:
    from lora_llava.models.tiny import is_tiny, tiny_checkpoint

    if is_tiny(model_cfg.path):
        return str(tiny_checkpoint(model_cfg.seed, model_cfg.path))
    path = model_cfg.path
    if looks_local(path) and not Path(path).expanduser().is_dir():
        # Else transformers would take it for a Hub id and answer with a download error.
        raise ModelPathError(f"model.path={path}: no such folder{' (it is a file)' if Path(path).is_file() else ''}; "
                             "point it at a local model folder (with config.json) or a Hub id such as "
                             "llava-hf/llava-1.5-7b-hf")
    return str(Path(path).expanduser()) if looks_local(path) else path


def load_config(model_cfg, path: str | None = None):
    """The checkpoint's config.json, with model.max_image_tiles applied to its tile grids."""
    from transformers import AutoConfig

    with loading(model_cfg, path):
        config = AutoConfig.from_pretrained(path or checkpoint_path(model_cfg), revision=model_cfg.revision,
                                            trust_remote_code=model_cfg.trust_remote_code)
    return family_for_config(config).limit_config_tiles(config, model_cfg.max_image_tiles)


def load_family(model_cfg, path: str | None = None) -> Family:
    return family_for_config(load_config(model_cfg, path))


def _device_map():
    if not torch.cuda.is_available():
        return None
    # FSDP and ZeRO-3 shard the model themselves (conf/accelerate/): a whole copy per GPU is what they avoid.
    if os.environ.get("ACCELERATE_USE_FSDP") == "true" or os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
        return None
    # One process per GPU under accelerate/torchrun (DDP, ZeRO-2): each loads the whole model onto its own device.
    return {"": int(os.environ.get("LOCAL_RANK", "0"))}


def loading(model_cfg, path: str | None = None):
    """Errors while loading the checkpoint, as one line naming model.path (or the merged folder)."""
    what = f"model.path={path or model_cfg.path}"
    return cannot_load(ConfigError, what, "Check the Hub id or folder, the network, or HF_HUB_OFFLINE")


def load_processor(model_cfg, path: str | None = None):
    """The checkpoint's processor, loaded the way its family needs, with model.max_image_tiles applied."""
    path = path or checkpoint_path(model_cfg)
    family = load_family(model_cfg, path)
    with loading(model_cfg, path):
        processor = family.load_processor(path, revision=model_cfg.revision,
                                          trust_remote_code=model_cfg.trust_remote_code)
    return family.limit_processor_tiles(processor, model_cfg.max_image_tiles)


def load_saved_processor(model_config, folder):
    """The processor saved in `folder` (an adapter or merged folder), loaded as the family of `model_config` loads
    its processors."""
    return family_for_config(model_config).load_processor(str(folder))


def build_model_and_processor(model_cfg, quant_cfg, dtype: torch.dtype | None = None, path: str | None = None):
    """Load model and processor, with model.projector loaded into the base. `dtype` overrides model.dtype
    (export reloads the base in 16-bit); `path` overrides model.path (a merged model, projector included)."""
    from transformers import AutoModelForImageTextToText

    base_path = path is None
    path = path or checkpoint_path(model_cfg)
    dtype = dtype or resolve_dtype(model_cfg.dtype)
    config = load_config(model_cfg, path)
    skip = family_for_config(config).never_quantized()
    quant = build_quant_config(quant_cfg, dtype, skip) if quant_cfg is not None else None
    with loading(model_cfg, path):
        model = AutoModelForImageTextToText.from_pretrained(
            path,
            config=config,
            revision=model_cfg.revision,
            dtype=dtype,
            quantization_config=quant,
            attn_implementation=model_cfg.attn_implementation,
            trust_remote_code=model_cfg.trust_remote_code,
            device_map=_device_map(),
            use_safetensors=True,
        )
    if model_cfg.projector and base_path:
        from lora_llava.models.projector import load_projector

        load_projector(model, model_cfg)  # an align run's projector, before any adapter goes on
    processor = load_processor(model_cfg, path)
    if processor.tokenizer.pad_token is None:
        # Llama tokenizers ship without one; LLaVA's own code pads with unk.
        processor.tokenizer.pad_token = processor.tokenizer.unk_token
    log.info("loaded %s (%s%s)", path, str(dtype).replace("torch.", ""),
             f", {quant_cfg.method}" if quant is not None else "")
    return model, processor


def describe_base_in_config(out_dir: Path, cfg) -> None:
    """adapter_config.json names the base by its Hub id (and revision) when known. For a local base, peft's
    path stays: it is what AutoPeftModel loads on this machine; the card says where the base comes from."""
    from lora_llava.models.card import base_model_id

    path = Path(out_dir) / "adapter_config.json"
    config = json.loads(path.read_text())
    if base_model_id(cfg):
        config["base_model_name_or_path"] = base_model_id(cfg)
    if cfg.model.revision:
        config["revision"] = cfg.model.revision
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_adapter(model, processor, out_dir: Path, cfg, metrics: dict | None = None, state_dict=None) -> Path:
    """adapter_config.json + adapter_model.safetensors (LoRA and the trained projector) + processor + card.
    `state_dict`: the model's full state dict when its parameters are sharded (FSDP)."""
    from lora_llava.models.card import write_model_card
    from lora_llava.models.fingerprint import save_fingerprint

    out_dir = Path(out_dir)
    with disk_full_message("saving the adapter", out_dir.parent):
        model.save_pretrained(out_dir, safe_serialization=True, state_dict=state_dict)
        processor.save_pretrained(out_dir)
        save_fingerprint(model, out_dir, state_dict)  # compared whenever the adapter is loaded again
    describe_base_in_config(out_dir, cfg)
    write_model_card(out_dir, cfg, metrics)
    return out_dir


def check_adapter_source(src: Path) -> None:
    if not (src / "adapter_config.json").is_file():
        raise MissingPathError(f"adapter={src}: no adapter_config.json there; point adapter= at a folder "
                                "written by the train stage (<run>/adapter) or a checkpoint "
                                "(<run>/checkpoints/checkpoint-N)")
    if not (src / "adapter_model.safetensors").is_file():
        pickled = [p.name for p in src.glob("adapter_model*") if p.suffix in PICKLE_SUFFIXES]
        hint = (f" It has {', '.join(pickled)}, a pickle, which this toolkit does not load: re-save it with "
                "save_pretrained(..., safe_serialization=True).") if pickled else ""
        raise MissingPathError(f"adapter={src}: no adapter_model.safetensors.{hint}")


def load_adapted(cfg, adapter: str | None):
    """The base model with `adapter` applied (or the bare model.path when no adapter is given)."""
    model, processor = build_model_and_processor(cfg.model, cfg.quant)
    if adapter is None:
        log.warning("no adapter given: evaluating %s as it is", cfg.model.path)
        return model, processor
    return apply_saved_adapter(model, adapter, cfg.model), processor


def apply_saved_adapter(base, adapter, model_cfg):
    """PeftModel.from_pretrained, after checking the folder and that `base` is the base it was trained on."""
    from peft import PeftModel

    from lora_llava.models.fingerprint import check_base

    check_adapter_source(Path(adapter))
    check_base(base, Path(adapter), model_cfg.path, model_cfg.base_check)
    return PeftModel.from_pretrained(base, str(adapter))

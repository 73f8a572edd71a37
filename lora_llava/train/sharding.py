"""Sharded training as the shipped presets ask for it (conf/accelerate/): FSDP on CPUs too, refused where it cannot
work, and DeepSpeed refused where accelerate would quietly drop it.

accelerate only turns `distributed_type: FSDP` into FSDP on accelerators; with CPU processes (gloo) it silently
runs plain data parallel instead, so the preset could not be tested off a GPU and a CPU run never sharded anything.
torch's FSDP2 (`fully_shard`) itself runs on CPU with gloo, so a CPU launch of the preset is promoted to FSDP here.
"""

from __future__ import annotations

import logging
import os

from lora_llava.errors import ConfigError

log = logging.getLogger("lora_llava")


def fsdp_requested() -> bool:
    """True in processes started by `accelerate launch` with an FSDP config (it exports ACCELERATE_USE_FSDP)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def check_fsdp_supported(quant_cfg) -> None:
    """Refuse, before any model loads, what FSDP cannot shard: bitsandbytes' 4-bit / 8-bit weights."""
    if not fsdp_requested() or quant_cfg.method == "none":
        return
    raise ConfigError(
        f"quant={quant_cfg.method} under FSDP: FSDP shards parameters by flattening them in one dtype, and "
        "bitsandbytes packs quantized weights as uint8 unless bnb_4bit_quant_storage equals the compute dtype, "
        "which quant/ does not set (and int8 weights cannot be sharded at all). Use quant=none with the FSDP "
        "preset, or QLoRA with the DDP preset (conf/accelerate/ddp.yaml): a 4-bit 7B/13B fits one card.")


def promote_cpu_fsdp(accelerator) -> bool:
    """On CPU processes launched with the FSDP preset, make `accelerator` shard with FSDP as it would on GPUs.
    Returns whether it did. Idempotent; a no-op outside that case."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = AcceleratorState()
    check_deepspeed_kept(state)
    if not fsdp_requested() or state.distributed_type != DistributedType.MULTI_CPU:
        return False
    state.fsdp_plugin = FullyShardedDataParallelPlugin()  # reads the preset's FSDP_* variables
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as AcceleratorState itself records it
    log.info("FSDP%d on %d CPU processes (gloo): parameters, gradients and optimizer state sharded",
             state.fsdp_plugin.fsdp_version, state.num_processes)
    return True


def gathered_state_dict(model):
    """The full state dict of an FSDP-sharded `model` on rank 0 ({} on the others), or None when `model` is not
    sharded. A collective: every process must call it."""
    from torch.distributed.tensor import DTensor

    if not any(isinstance(p, DTensor) for p in model.parameters()):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state_dict = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if state_dict:  # rank 0's
        log.info("FSDP: gathered the full state dict (%d tensors) of the sharded model on rank 0", len(state_dict))
    return state_dict


def check_deepspeed_kept(state) -> None:
    """A DeepSpeed preset on CPU processes: accelerate runs plain data parallel instead, without a word. Stop."""
    from accelerate.utils import DistributedType

    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true":
        return
    if state.distributed_type != DistributedType.DEEPSPEED:
        raise ConfigError(
            "a DeepSpeed preset (conf/accelerate/deepspeed-*.yaml) was launched on CPU processes, where accelerate "
            "does not run DeepSpeed and would train with plain data parallel instead: use the ZeRO presets on CUDA "
            "GPUs, or conf/accelerate/fsdp.yaml / ddp.yaml here.")

"""What a setting needs from this machine, checked when a run starts: the optional packages of the speed
levers, kernel combinations that cannot work, and an endpoint's client and key. Not part of check_values:
composing a config (tests, `--cfg job`) needs none of it."""

from __future__ import annotations

from lora_llava.checks.values import uses_endpoint
from lora_llava.errors import ConfigError

ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
# Attention kernels that take sequence boundaries (cu_seqlens) from the position ids of a packed row.
VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3")
# Optional packages a key needs: (key, value) -> (module, what to install).
OPTIONAL = {
    ("model.attn_implementation", "flash_attention_2"): ("flash_attn", "pip install flash-attn --no-build-isolation"),
    ("model.attn_implementation", "flash_attention_3"): (
        "flash_attn_interface", "build flash-attention's hopper/ package (H100/H200 only)"),
    ("train.use_liger_kernel", True): ("liger_kernel", "pip install 'lora_llava[liger]'"),
}


def check_levers(cfg) -> None:
    """The optional speed levers, checked at start: a missing package or a combination that cannot work stops
    here with ConfigError naming the key, not at the first training step."""
    from importlib.util import find_spec

    attn = cfg.model.attn_implementation
    if attn is not None and attn not in ATTENTION:
        raise ConfigError(f"model.attn_implementation={attn!r} is not one of {', '.join(ATTENTION)} (or null)")
    for (key, value), (module, install) in OPTIONAL.items():
        group, name = key.split(".")
        if cfg[group][name] == value and find_spec(module) is None:
            raise ConfigError(f"{key}={value} needs the {module} package, which is not installed: {install} "
                              f"(CUDA GPUs only), or leave {key} at its default")
    if cfg.train.padding_free and attn not in VARLEN_ATTENTION:
        raise ConfigError(f"train.padding_free=true needs model.attn_implementation=flash_attention_2 or _3 (it is "
                          f"{attn}): other kernels would attend across the packed rows' boundaries or mask a "
                          "full square, losing what packing saves")
    from transformers.training_args import OptimizerNames

    optim = cfg.train.optim
    if optim not in {o.value for o in OptimizerNames}:
        raise ConfigError(f"train.optim={optim!r} is not an optimizer transformers knows, e.g. adamw_torch, "
                          "adamw_torch_fused, paged_adamw_8bit, adamw_8bit")
    if ("8bit" in optim or "paged" in optim) and find_spec("bitsandbytes") is None:
        raise ConfigError(f"train.optim={optim} needs bitsandbytes: pip install bitsandbytes")


def check_endpoint_ready(cfg) -> None:
    """The environment an endpoint stage needs (the openai package, the key's variable), checked when a run
    starts rather than after hours of training. Not part of check_values: composing needs no key."""
    import os
    from importlib.util import find_spec

    if not uses_endpoint(cfg):
        return
    if find_spec("openai") is None:
        raise ConfigError("the endpoint client needs the openai package: pip install 'lora_llava[endpoint]'")
    env = cfg.endpoint.api_key_env
    if env and not os.environ.get(env):
        raise ConfigError(f"endpoint.api_key_env={env}: the environment variable {env} is not set; export it, "
                         "or pass endpoint.api_key_env=null for a server that needs no key")

"""The registry of model families: a checkpoint's family from its config's `model_type` (or from its processor).
Adding a family: its module here, a conf/model/*.yaml, and its row in the tests' family table."""

from __future__ import annotations

from lora_llava.errors import ConfigError
from lora_llava.models.base import Family
from lora_llava.models.llava import LLAVA
from lora_llava.models.llava_next import LLAVA_NEXT
from lora_llava.models.llava_onevision import LLAVA_ONEVISION

FAMILIES: tuple[Family, ...] = (LLAVA, LLAVA_NEXT, LLAVA_ONEVISION)


def family_for_model_type(model_type: str, where: str = "the checkpoint") -> Family:
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    known = ", ".join(t for f in FAMILIES for t in f.model_types)
    raise ConfigError(f"{where}: model_type {model_type!r} is not a family lora_llava serves ({known}); "
                      "a new family is one module in lora_llava/models/ (see README, 'Adding a family')")


def family_for_config(config) -> Family:
    return family_for_model_type(config.model_type)


def family_for_processor(processor) -> Family:
    names = {cls.__name__ for cls in type(processor).__mro__}
    for family in FAMILIES:
        if family.processor_class in names:
            return family
    raise ConfigError(f"{type(processor).__name__} is not the processor of a family lora_llava serves")

"""An adapter knows its base: a fingerprint saved beside it is compared on load (refuse, or warn when asked);
the same base loaded in another dtype matches, another base does not. A missing local model.path says so."""

import logging

import pytest
import torch

from lora_llava.models.fingerprint import FILE, BaseMismatch, fingerprint
from lora_llava.models.load import ModelPathError, build_model_and_processor, load_adapted, save_adapter
from tests.conftest import smoke_config


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    from lora_llava.models.adapters import apply_adapters

    cfg = smoke_config()
    model, processor = build_model_and_processor(cfg.model, cfg.quant)
    model = apply_adapters(model, cfg.peft, quantized=False, gradient_checkpointing=False)
    return save_adapter(model, processor, tmp_path_factory.mktemp("run") / "adapter", cfg)


def test_the_same_base_in_another_dtype_has_the_same_fingerprint(tiny_model_and_processor):
    cfg = smoke_config()
    bf16, _ = build_model_and_processor(cfg.model, cfg.quant, dtype=torch.bfloat16)
    assert fingerprint(bf16) == fingerprint(tiny_model_and_processor[0])
    other, _ = build_model_and_processor(smoke_config("model.seed=1").model, cfg.quant)
    assert fingerprint(other)["tensors"] != fingerprint(bf16)["tensors"]


def test_an_adapter_on_another_base_is_refused_or_warned_about(adapter, caplog):
    assert (adapter / FILE).is_file()
    load_adapted(smoke_config(), str(adapter))  # its own base: no complaint
    with pytest.raises(BaseMismatch, match=r"trained on another base than model.path=tiny .*input_embeddings "
                                           r"weights differ.*model.base_check=warn"):
        load_adapted(smoke_config("model.seed=1"), str(adapter))
    with caplog.at_level(logging.WARNING, logger="lora_llava"):
        model, _ = load_adapted(smoke_config("model.seed=1", "model.base_check=warn"), str(adapter))
    assert "trained on another base" in caplog.text and hasattr(model, "peft_config")


@pytest.mark.parametrize("path", ["/no/such/llava", "./models/llava-local", "../missing-llava"])
def test_a_missing_local_model_folder_says_the_folder_is_missing(path):
    with pytest.raises(ModelPathError, match=f"model.path={path}: no such folder"):
        build_model_and_processor(smoke_config(f"model.path={path}").model, None)

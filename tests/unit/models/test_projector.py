"""An align run's projector folder: peft.method=none trains the projector alone; model.projector loads a saved
one into the base before adapters, refusing one of other shapes or from another base."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lora_llava.checks import check_values
from lora_llava.config import compose
from lora_llava.errors import ConfigError
from lora_llava.models.adapters import apply_adapters, trainable_by_group
from lora_llava.models.load import build_model_and_processor
from lora_llava.models.projector import INFO, WEIGHTS, base_identity, projector_state, save_projector


def _align(*overrides):
    return compose("align", ["train.report_to=[]", *overrides])


def _saved(tmp_path, seed=0):
    """A projector folder holding the tiny base's projector with every weight shifted by 0.5."""
    cfg = _align(f"model.seed={seed}")
    model, _ = build_model_and_processor(cfg.model, cfg.quant)
    with torch.no_grad():
        for tensor in projector_state(model).values():
            tensor.add_(0.5)
    return save_projector(model, tmp_path / "projector", base_identity(cfg.model)), projector_state(model)


def test_method_none_leaves_the_projector_alone_trainable():
    cfg = _align()
    model, _ = build_model_and_processor(cfg.model, cfg.quant)
    model = apply_adapters(model, cfg.peft, False, False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in dict(model.named_parameters()) if ".multi_modal_projector." in n}
    assert not any("lora_" in n for n, _ in model.named_parameters())  # no adapter at all
    assert set(trainable_by_group(model)) == {"projector"}


def test_saved_projector_loads_into_a_later_base(tmp_path):
    folder, saved = _saved(tmp_path)
    info = json.loads((folder / INFO).read_text())
    assert info["base"] == "tiny (seed 0)" and info["modules"] == ["multi_modal_projector"]
    assert set(info["shapes"]) == set(saved) == set(load_file(folder / WEIGHTS))
    cfg = compose("smoke", [f"model.projector={folder}"])
    loaded, _ = build_model_and_processor(cfg.model, cfg.quant)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in saved.items())
    plain, _ = build_model_and_processor(compose("smoke").model, None)
    assert not torch.equal(plain.state_dict()[next(iter(saved))], next(iter(saved.values())))


def test_wrong_shape_is_refused_naming_the_tensor(tmp_path):
    folder, saved = _saved(tmp_path)
    weights = load_file(folder / WEIGHTS)
    name = next(k for k in weights if k.endswith("linear_2.weight"))
    weights[name] = weights[name][:-1]  # one output row short, as from a base of another width
    save_file(weights, str(folder / WEIGHTS))
    cfg = compose("smoke", [f"model.projector={folder}"])
    with pytest.raises(ConfigError) as err:
        build_model_and_processor(cfg.model, cfg.quant)
    message = str(err.value)
    assert "\n" not in message
    expected = list(saved[name].shape)
    assert f"{name} is {[expected[0] - 1, expected[1]]} there, {expected} here" in message


def test_projector_from_another_base_is_refused(tmp_path):
    folder, _ = _saved(tmp_path, seed=1)
    cfg = compose("smoke", [f"model.projector={folder}"])
    with pytest.raises(ConfigError, match=r"aligned on tiny \(seed 1\), but model.path is tiny \(seed 0\)"):
        build_model_and_processor(cfg.model, cfg.quant)


def test_a_folder_without_a_projector_is_refused(tmp_path):
    cfg = compose("smoke", [f"model.projector={tmp_path}"])
    with pytest.raises(ConfigError, match="projector.json and projector.safetensors"):
        build_model_and_processor(cfg.model, cfg.quant)


@pytest.mark.parametrize("overrides, key", [
    (["quant=nf4"], "quant.method=nf4"),
    (["peft.train_projector=false"], "nothing to train"),
    (["stages=[train,push]", "hub.dry_run=true"], "no adapter to push"),
])
def test_settings_that_cannot_align_are_refused(overrides, key):
    with pytest.raises(ConfigError, match=key):
        check_values(_align(*overrides))

"""Every shipped recipe composes and validates; typos and wrong types fail naming the key."""

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException

from lora_llava.checks import check_values
from lora_llava.config import compose, config_dirs, list_recipes


@pytest.mark.parametrize("recipe", list_recipes())
def test_every_recipe_composes_and_validates(recipe):
    cfg = compose(recipe)
    check_values(cfg)
    assert cfg.recipe_name == recipe
    assert cfg.stages, "a recipe must set its default stages"


def test_misspelt_key_is_rejected():
    with pytest.raises(ConfigCompositionException) as err:
        compose("smoke", ["peft.rnk=8"])
    assert "peft.rnk" in str(err.value) + str(err.value.__cause__)


def test_wrong_type_is_rejected():
    with pytest.raises(ConfigCompositionException) as err:
        compose("smoke", ["train.learning_rate=abc"])
    assert "train.learning_rate" in str(err.value) + str(err.value.__cause__)


def test_bad_choice_names_the_key():
    with pytest.raises(ValueError, match="quant.method"):
        check_values(compose("smoke", ["quant.method=nf3"]))
    with pytest.raises(ValueError, match="stages"):
        check_values(compose("smoke", ["stages=[train,deploy]"]))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lora_llava", *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_cli_rejects_typo_and_bad_type_before_loading_anything():
    for arg, key in (("peft.rnk=8", "peft.rnk"), ("train.learning_rate=abc", "train.learning_rate")):
        proc = _cli("recipe=smoke", arg)
        assert proc.returncode != 0
        assert key in proc.stderr + proc.stdout
        assert "stage train" not in proc.stderr + proc.stdout


def test_cli_prints_scienceqa_config():
    proc = _cli("recipe=scienceqa", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    assert "llava-hf/llava-1.5-7b-hf" in proc.stdout
    assert "bnb_4bit_quant_type: nf4" in proc.stdout and "method: nf4" in proc.stdout


def test_cli_finds_a_teams_own_recipe(tmp_path):
    (tmp_path / "my_domain.yaml").write_text("defaults:\n  - base\n  - _self_\nrecipe_name: my_domain\npeft:\n  r: 3\n")
    proc = _cli("--config-dir", str(tmp_path), "recipe=my_domain", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    assert "r: 3" in proc.stdout and "recipe_name: my_domain" in proc.stdout


def test_cli_without_recipe_lists_them():
    proc = _cli()
    assert proc.returncode != 0 and "smoke" in proc.stderr


@pytest.mark.parametrize("model", sorted(p.stem for p in (config_dirs()[0] / "model").glob("*.yaml")))
def test_every_model_option_composes_with_every_key_known(model):
    """conf/model/*.yaml: each composes into the schema (a misspelt key would fail here) and names a checkpoint."""
    cfg = compose("scienceqa", [f"model={model}"])
    check_values(cfg)
    assert cfg.model.path and cfg.model.license

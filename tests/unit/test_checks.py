"""Config that cannot train right is refused before anything loads, naming the key; a key added with `+` that
no schema knows gets the same message as a misspelt one."""

import warnings

import pytest

from lora_llava.checks import check_values, describe_config_error, unknown_key_message
from lora_llava.config import compose
from lora_llava.errors import ConfigError

REFUSED = [
    ("train.epochs=0", "train.epochs"),
    ("train.epochs=-1", "train.epochs"),
    ("train.max_steps=0", "train.max_steps"),
    ("train.max_steps=-5", "train.max_steps"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.gradient_accumulation_steps=0", "train.gradient_accumulation_steps"),
    ("eval.batch_size=-1", "eval.batch_size"),
    ("eval.max_new_tokens=0", "eval.max_new_tokens"),
    ("train.save_steps=0", "train.save_steps"),
    ("train.logging_steps=0", "train.logging_steps"),
    ("train.eval_steps=0", "train.eval_steps"),
    ("data.max_length=0", "data.max_length"),
    ("data.val_fraction=1.0", "data.val_fraction"),
    ("data.val_fraction=-0.1", "data.val_fraction"),
    ("data.max_skip_fraction=1", "data.max_skip_fraction"),
    ("peft.lora_dropout=1.5", "peft.lora_dropout"),
    ("peft.r=0", "peft.r"),
    ("train.learning_rate=-1e-4", "train.learning_rate"),
    ("train.warmup_steps=-1", "train.warmup_steps"),
    ("stages=[]", "stages"),
]


@pytest.mark.parametrize(("override", "key"), REFUSED)
def test_values_that_cannot_train_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_values(compose("smoke", [override]))


def test_edge_values_that_can_train_pass():
    check_values(compose("smoke", ["train.max_steps=3", "train.epochs=0", "data.val_fraction=0",
                                   "data.max_skip_fraction=0", "peft.lora_dropout=0"]))


def test_a_learning_rate_of_zero_warns():
    with pytest.warns(UserWarning, match="train.learning_rate=0"):
        check_values(compose("smoke", ["train.learning_rate=0"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_values(compose("smoke"))


@pytest.mark.parametrize("key", ["foo", "peft.rnk", "train.lerning_rate", "data.synthetic.n_trian"])
def test_a_key_added_with_plus_is_refused_like_a_typo(key):
    with pytest.raises(ConfigError) as added:
        check_values(compose("smoke", [f"+{key}=1"]))
    with pytest.raises(Exception) as typo:  # Hydra refuses the plain override at composition
        compose("smoke", [f"{key}=1"])
    assert str(added.value) == describe_config_error(typo.value) == \
        unknown_key_message(key, f"on the command line: {key}")
    assert repr(key) in str(added.value)


def test_free_form_maps_still_take_new_keys():
    cfg = compose("smoke", ["+data.data_files.extra=x.jsonl", "+extra.team=vision"])
    check_values(cfg)
    assert cfg.data.data_files.extra == "x.jsonl" and cfg.extra.team == "vision"

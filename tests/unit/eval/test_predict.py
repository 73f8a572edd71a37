"""The predict command's arguments and where its config comes from (no model is loaded here)."""

import pytest
from omegaconf import OmegaConf

from lora_llava.errors import ConfigError
from lora_llava.eval.predict import load_config, split_args
from tests.conftest import smoke_config


def test_own_keys_are_split_from_config_overrides():
    own, overrides = split_args(["recipe=smoke", "adapter=out/adapter", "image=cat.png",
                                 "question=What is it?", "--interactive", "max_new_tokens=12",
                                 "model.dtype=float32"])
    assert own == {"image": "cat.png", "question": "What is it?", "interactive": True, "max_new_tokens": 12,
                   "endpoint": None, "served_model": None}
    assert overrides == ["recipe=smoke", "adapter=out/adapter", "model.dtype=float32"]
    assert split_args(["interactive=false"])[0]["interactive"] is False


def test_recipe_and_overrides_compose_like_the_main_command():
    cfg = load_config(["recipe=smoke", "adapter=/some/adapter", "eval.max_new_tokens=3"])
    assert (cfg.recipe_name, cfg.adapter, cfg.eval.max_new_tokens) == ("smoke", "/some/adapter", 3)
    with pytest.raises(Exception, match="rnk"):
        load_config(["recipe=smoke", "peft.rnk=3"])


def test_without_a_recipe_the_adapters_run_config_is_used(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(smoke_config("model.seed=7"), run / ".hydra" / "config.yaml")
    cfg = load_config([f"adapter={run / 'adapter'}", "data.system_prompt=Be brief."])
    assert (cfg.recipe_name, cfg.model.seed, cfg.data.system_prompt) == ("smoke", 7, "Be brief.")
    with pytest.raises(Exception, match="rnk"):  # the schema still catches typos
        load_config([f"adapter={run / 'adapter'}", "peft.rnk=3"])


def test_without_a_recipe_or_run_config_it_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="recipe=NAME"):
        load_config([f"adapter={tmp_path / 'adapter'}"])


def _chat(lines, image=None):
    """Interactive predict's answers to `lines`, without a model: only commands are sent, so none is needed."""
    from lora_llava.eval.predict import chat

    said = []
    chat(None, image, read=lambda prompt: lines.pop(0) if lines else "/quit", write=said.append)
    return said


def test_interactive_image_command_checks_the_file_at_once(tmp_path):
    (tmp_path / "b.png").write_bytes(b"x")
    said = _chat([f"/image {tmp_path / 'missing.png'}", f"/image {tmp_path / 'b.png'}"], image="a.png")
    assert said[0] == f"(no such file: {tmp_path / 'missing.png'}; still about a.png)"
    assert said[1] == f"(new conversation about {tmp_path / 'b.png'})"


def test_interactive_help_lists_the_commands():
    said = _chat(["/help", "/nonsense"])
    assert all(c in said[0] for c in ("/image FILE", "/reset", "/help", "/quit")) and said[1] == said[0]

"""The model card: Hub metadata that parses with huggingface_hub.ModelCard, the eval table, how to load it;
`base_model`/`datasets` only ever name Hub ids, never a path on the training machine."""

import pytest
from huggingface_hub import ModelCard

from lora_llava.config import compose
from lora_llava.models.card import base_model_id, card_metadata, flat_metrics, is_hub_id, write_model_card

METRICS = {"accuracy": 0.9123, "n": 4241, "by_subject": {"NAT": 0.91, "SOC": 0.95}, "unparsed": 3}


def test_scienceqa_card_parses_with_the_hub_metadata(tmp_path):
    cfg = compose("scienceqa", ["hub.repo_id=acme/llava-sqa"])
    card = ModelCard.load(write_model_card(tmp_path, cfg, METRICS))
    data = card.data.to_dict()
    assert data["base_model"] == "llava-hf/llava-1.5-7b-hf"
    assert data["library_name"] == "peft" and data["pipeline_tag"] == "image-text-to-text"
    assert data["license"] == "llama2"
    assert {"qlora", "llava", "scienceqa"} <= set(data["tags"]) and "lora" not in data["tags"]
    assert data["datasets"] == [cfg.data.path]
    assert "| accuracy | 0.9123 |" in card.text and "| by_subject / NAT | 0.9100 |" in card.text
    assert 'PeftModel.from_pretrained(base, "acme/llava-sqa")' in card.text
    assert 'from_pretrained("llava-hf/llava-1.5-7b-hf"' in card.text
    assert f"r={cfg.peft.r}, lora_alpha={cfg.peft.lora_alpha}" in card.text


def test_tiny_card_names_no_local_path_as_base(tmp_path):
    cfg = compose("smoke")
    meta = card_metadata(cfg)
    assert "base_model" not in meta and "datasets" not in meta
    assert meta["tags"][:2] == ["llava", "lora"] and meta["license"] == "apache-2.0"
    text = ModelCard.load(write_model_card(tmp_path, cfg)).text
    assert "tiny_checkpoint(0, 'tiny')" in text and "No evaluation was run" in text
    assert str(tmp_path) not in text


def test_export_base_model_names_the_hub_copy_of_a_local_base(tmp_path):
    local = tmp_path / "llava-hf" / "llava-1.5-7b-hf"
    local.mkdir(parents=True)
    cfg = compose("smoke", [f"model.path={local}"])
    assert base_model_id(cfg) is None  # a directory that looks like an id is still a path
    cfg = compose("smoke", [f"model.path={local}", "export.base_model=llava-hf/llava-1.5-7b-hf"])
    assert card_metadata(cfg)["base_model"] == "llava-hf/llava-1.5-7b-hf"


def test_license_is_read_from_a_local_base_card(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n# a base\n")
    cfg = compose("smoke", [f"model.path={tmp_path}", "model.license=null"])
    assert card_metadata(cfg)["license"] == "mit"


@pytest.mark.parametrize("name, expected", [("org/name", True), ("llava-hf/llava-1.5-7b-hf", True),
                                            ("tiny", False), ("/abs/org/name", False), ("a/b/c", False)])
def test_is_hub_id(name, expected):
    assert is_hub_id(name) is expected


def test_nested_metrics_are_flattened():
    assert flat_metrics(METRICS) == [("accuracy", 0.9123), ("n", 4241), ("by_subject / NAT", 0.91),
                                     ("by_subject / SOC", 0.95), ("unparsed", 3)]

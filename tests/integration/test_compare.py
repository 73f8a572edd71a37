"""stages=[compare]: the base model (adapters and trained projector disabled, same process) against the adapted
one on the same questions, a general slice from another source, and the table in compare.md and the card."""

import json

import pytest
import torch

from lora_llava.data import load_splits
from lora_llava.data.collate import Collator
from lora_llava.eval.answers import split_samples
from lora_llava.run import run
from tests.conftest import smoke_config


def general_file(path, n=16):
    """A jsonl general slice (image, question, answer) from other synthetic pictures than the task's."""
    rows = []
    for sample in load_splits(smoke_config("data.synthetic.seed=7").data)["test"][:n]:
        image = path.parent / f"{sample.id}.png"
        sample.images[0].save(image)
        rows.append({"id": sample.id, "image": image.name, "question": sample.turns[0].text.split("\n", 1)[1],
                     "answer": sample.answer})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_base_is_near_chance_and_the_adapter_near_one(trained_smoke, tmp_path):
    general = tmp_path / "general" / "slice.jsonl"
    general.parent.mkdir()
    general_file(general)
    adapter = trained_smoke.run_dir / "adapter"
    cfg = smoke_config("stages=[compare,export]", f"adapter={adapter}", "eval.limit=48",
                       "compare.general.source=jsonl", f"compare.general.path={general}",
                       f"compare.general.image_root={general.parent}",
                       "compare.general_split=train", "compare.general_scorer=exact")
    ctx = run(cfg, tmp_path / "run")
    results = json.loads((tmp_path / "run" / "eval" / "compare.json").read_text())
    task, other = results["task"], results["general"]
    general_questions = split_samples(cfg.compare.general, "train", cfg.compare.general_limit)
    assert task["n"] == 48 and other["n"] == len(general_questions) >= 12
    # 6 colours or 4 places: chance is at most 1/4 per question
    assert task["base"]["accuracy"] <= 0.3 and task["adapted"]["accuracy"] >= 0.9
    assert other["adapted"]["accuracy"] >= 0.8  # the same kind of pictures: nothing to forget here
    table = (tmp_path / "run" / "eval" / "compare.md").read_text()
    difference = 100 * (task["adapted"]["accuracy"] - task["base"]["accuracy"])
    assert f"| overall | 48 | {100 * task['base']['accuracy']:.2f} | {100 * task['adapted']['accuracy']:.2f} " \
           f"| {difference:+.2f} |" in table
    assert "General slice: jsonl" in table
    card = (tmp_path / "run" / "adapter" / "README.md").read_text()
    assert "Base model vs adapted model" in card and f"{difference:+.2f}" in card
    assert ctx.extra["compare"]["task"]["n"] == 48


def as_tensor(features):
    """get_image_features' result as one tensor (transformers returns a tuple per image or an output object)."""
    features = getattr(features, "pooler_output", features)
    return torch.cat(list(features)) if isinstance(features, (list, tuple)) else features


def test_disabling_the_adapter_gives_the_base_model_projector_included(trained_smoke):
    """The trained projector is a modules_to_save copy: disable_adapter() must route around it too."""
    from lora_llava.models.load import build_model_and_processor

    cfg = smoke_config()
    fresh, processor = build_model_and_processor(cfg.model, cfg.quant)
    batch = Collator(processor)(load_splits(cfg.data)["test"][:8])
    batch.pop("labels")
    model = trained_smoke.model.eval()
    with torch.no_grad():
        base = fresh.eval()(**batch).logits
        with model.disable_adapter():
            disabled = model(**batch).logits
        adapted = model(**batch).logits
    assert torch.allclose(disabled, base, atol=1e-5)
    assert not torch.allclose(adapted, base, atol=1e-3)
    # and the projector alone: its image features differ from the base's only while the adapter is on
    pixels = batch["pixel_values"]
    with torch.no_grad():
        base_features = fresh.get_image_features(pixel_values=pixels)
        with model.disable_adapter():
            disabled_features = model.get_image_features(pixel_values=pixels)
        adapted_features = model.get_image_features(pixel_values=pixels)
    assert torch.allclose(as_tensor(disabled_features), as_tensor(base_features), atol=1e-5)
    assert not torch.allclose(as_tensor(adapted_features), as_tensor(base_features), atol=1e-3)


def test_compare_without_an_adapter_stops_before_loading():
    from lora_llava.checks import check_values
    from lora_llava.errors import ConfigError

    with pytest.raises(ConfigError, match="compare needs an adapter"):
        check_values(smoke_config("stages=[compare]"))

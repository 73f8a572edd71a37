"""The planner per family, on configs built from the published architecture numbers (benchmarks/shapes.py, no
download): exact counts where we know them, anyres image tokens from the family layer, model.max_image_tiles
lowering them, and the README's families table as benchmarks/families.py prints it."""

import json

import pytest

from benchmarks.shapes import llava_next_config, llava_onevision_config
from lora_llava.models.families import family_for_config


def test_anyres_token_counts_from_the_config():
    next_, onevision = llava_next_config("mistral-7b"), llava_onevision_config("qwen2-0.5b")
    family = family_for_config(next_)
    # 336 px square: base 576 + a 1x2 grid (the least padding) unpadded back to 24x24 + 24 row newlines
    assert family.image_tokens_for_size(next_, (336, 336)) == 576 + 24 * 24 + 24
    assert family.max_image_tokens(next_) == 576 + 48 * 48 + 48  # the 672x672 grid
    ov = family_for_config(onevision)
    assert ov.image_tokens_for_size(onevision, (384, 384)) > 729  # base view 27x27 plus tiles


@pytest.mark.parametrize("build, text, tiles", [(llava_next_config, "mistral-7b", 2),
                                                (llava_onevision_config, "qwen2-0.5b", 4)])
def test_max_image_tiles_lowers_the_planned_image_tokens(build, text, tiles):
    config = build(text)
    family = family_for_config(config)
    full = family.max_image_tokens(config)
    capped = family.limit_config_tiles(build(text), tiles)
    assert all((h // config.vision_config.image_size) * (w // config.vision_config.image_size) <= tiles
               for h, w in capped.image_grid_pinpoints)
    assert family.max_image_tokens(capped) < full


def test_families_table(tmp_path, capsys):
    """`python -m benchmarks.families` (README, "Families"): one row per shipped model."""
    from benchmarks.families import main

    main(["--json", str(tmp_path / "families.json")])
    rows = {r["model"]: r for r in json.loads((tmp_path / "families.json").read_text())}
    assert rows["llava-1.5-7b"]["parameters"] == 7_063_427_072
    assert rows["llava-1.5-7b"]["tokens_photo"] == rows["llava-1.5-7b"]["tokens_max"] == 576
    assert rows["llava-next-mistral-7b"]["tokens_max"] == 2928
    assert 7.5e9 < rows["llava-next-mistral-7b"]["parameters"] < 7.6e9
    assert 0.85e9 < rows["llava-onevision-0.5b"]["parameters"] < 0.95e9
    assert 7.9e9 < rows["llava-onevision-7b"]["parameters"] < 8.1e9
    assert all(r["largest_batch"]["checkpointing"] >= 1 for r in rows.values())
    assert "| `llava-onevision-7b` |" in capsys.readouterr().out

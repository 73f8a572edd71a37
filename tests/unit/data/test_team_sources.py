"""A team's own data: LLaVA conversation JSON/JSONL, a flat JSONL/CSV table, any `datasets` dataset; a seeded
validation split when none is given; `<image>` placement."""

import json

import pytest
from PIL import Image

from lora_llava.data import load_splits
from lora_llava.data.placement import front
from lora_llava.data.splits import carve_validation, split_from_filename
from tests.conftest import smoke_config


def load(*overrides):
    return load_splits(smoke_config(*overrides).data)


CONVERSATIONS = [
    {"id": "two-images", "image": ["a.png", "b.png"], "source": "team",
     "conversations": [{"from": "human", "value": "Compare <image> with <image>."},
                       {"from": "gpt", "value": "The first is red."},
                       {"from": "human", "value": "And the second?"},
                       {"from": "gpt", "value": "Blue."}]},
    {"id": "text", "conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]},
    {"id": "odd-role", "conversations": [{"from": "system", "value": "x"}, {"from": "gpt", "value": "y"}]},
]


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_llava_json_multi_turn_several_images(tmp_path, suffix):
    path = tmp_path / f"team_train{suffix}"
    text = json.dumps(CONVERSATIONS) if suffix == ".json" else "\n".join(json.dumps(r) for r in CONVERSATIONS)
    path.write_text(text)
    splits = load("data.source=llava_json", f"data.path={path}", f"data.image_root={tmp_path}",
                  "data.val_fraction=0")
    two, plain, odd = splits["train"]
    assert [t.role for t in two.turns] == ["user", "assistant", "user", "assistant"]
    assert two.turns[0].text == "Compare <image> with <image>." and two.images == ["a.png", "b.png"]
    assert two.meta == {"source": "team"} and plain.images == []
    assert odd.turns[0].role == "system"  # kept as is, so screening rejects it by name


def test_llava_json_front_placement_matches_llavas_training(tmp_path):
    assert front("Question?\n<image>") == "<image>\nQuestion?"
    assert front("Compare <image> with <image>.") == "<image>\n<image>\nCompare  with ."
    path = tmp_path / "x.json"
    path.write_text(json.dumps(CONVERSATIONS[:1]))
    (sample,) = load("data.source=llava_json", f"data.path={path}", f"data.image_root={tmp_path}",
                     "data.image_placement=front", "data.val_fraction=0")["train"]
    assert sample.turns[0].text.startswith("<image>\n<image>\nCompare")


def test_llava_json_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(CONVERSATIONS[1]) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2: not valid JSON"):
        load("data.source=llava_json", f"data.path={bad}", f"data.image_root={tmp_path}")
    relative = tmp_path / "r.json"
    relative.write_text(json.dumps(CONVERSATIONS[:1]))
    with pytest.raises(ValueError, match=r"data.image_root is not set.*'two-images'.*'a.png'"):
        load("data.source=llava_json", f"data.path={relative}")


def test_chat_template_style_content_parts(tmp_path):
    record = {"id": "m", "image": "a.png", "conversations": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "\nWhat is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}]}
    (tmp_path / "m.json").write_text(json.dumps([record]))
    (sample,) = load("data.source=llava_json", f"data.path={tmp_path / 'm.json'}", f"data.image_root={tmp_path}",
                     "data.val_fraction=0")["train"]
    assert [t.text for t in sample.turns] == ["<image>\nWhat is it?", "A cat."]


def test_flat_csv_and_jsonl_with_column_mapping(tmp_path):
    (tmp_path / "train.csv").write_text("file,prompt,label,site\nx.png,What is shown?,a crack,north\n"
                                        ",Is steel a metal?,yes,south\n")
    splits = load("data.source=jsonl", f"data.path={tmp_path / 'train.csv'}", f"data.image_root={tmp_path}",
                  "data.columns.image=file", "data.columns.question=prompt", "data.columns.answer=label",
                  "data.val_fraction=0")
    crack, steel = splits["train"]
    assert crack.turns[0].text == "<image>\nWhat is shown?" and crack.answer == "a crack"
    assert crack.images == ["x.png"] and crack.meta == {"site": "north"} and crack.id == "train:1"
    assert steel.images == [] and steel.turns[0].text == "Is steel a metal?"
    rows = [{"id": "q1", "image": ["a.png", "b.png"], "question": "Same part?", "answer": "no"}]
    (tmp_path / "pairs_test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (pair,) = load("data.source=jsonl", f"data.path={tmp_path / 'pairs_test.jsonl'}",
                   f"data.image_root={tmp_path}")["test"]
    assert pair.turns[0].text == "<image>\n<image>\nSame part?" and pair.id == "q1"


def test_flat_table_without_question_column_says_how_to_map(tmp_path):
    (tmp_path / "t.csv").write_text("img,q,a\nx.png,Q,A\n")
    with pytest.raises(ValueError, match=r"no question \(column 'question'\).*columns are img, q, a.*data.columns.question=COLUMN"):
        load("data.source=jsonl", f"data.path={tmp_path / 't.csv'}", f"data.image_root={tmp_path}")


def test_hf_dataset_with_image_and_classlabel_columns(tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
    from datasets import Image as ImageFeature

    features = Features({"img": ImageFeature(), "query": Value("string"), "label": ClassLabel(names=["no", "yes"])})
    images = [Image.new("RGB", (8, 8), c) for c in ("red", "blue", "green", "white")]
    ds = Dataset.from_dict({"img": images, "query": ["Red?"] * 4, "label": [1, 0, 0, 0]}, features=features)
    DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "saved"))
    splits = load("data.source=hf", f"data.path={tmp_path / 'saved'}", "data.columns.image=img",
                  "data.columns.question=query", "data.columns.answer=label", "data.val_fraction=0.25")
    assert {k: len(v) for k, v in splits.items()} == {"train": 3, "test": 1, "validation": 1}
    (first,) = splits["test"]
    assert first.answer == "yes" and first.turns[0].text == "<image>\nRed?" and first.id == "test-0"
    assert isinstance(first.images[0], Image.Image) and first.images[0].size == (8, 8)


def test_seeded_validation_split_is_reproducible_and_disjoint():
    items = list(range(100))
    train, val = carve_validation(items, 0.1, seed=3)
    assert len(val) == 10 and sorted(train + val) == items and train == sorted(train)
    assert carve_validation(items, 0.1, seed=3) == (train, val)
    assert carve_validation(items, 0.1, seed=4)[1] != val


def test_validation_never_asks_about_an_image_the_model_trained_on():
    """Several questions per image (generated data, VQA): the held-out split takes whole images. With one
    question per image the split is the one drawn per sample."""
    from lora_llava.data.samples import Sample, Turn
    from lora_llava.data.splits import image_groups

    def qa(i, *images):
        return Sample(f"q{i}", [Turn("user", "<image>" * len(images) + "Q?"), Turn("assistant", "A")], list(images))

    samples = [qa(i, f"img{i // 3}.png") for i in range(60)]  # three questions per image
    samples += [qa(60, "img0.png", "other.png"), qa(61, "other.png"), qa(62)]  # linked through other.png; text
    groups = image_groups(samples)
    assert len(set(groups)) == 21 and groups[60] == groups[61] == groups[0] and groups[62] == 20
    for seed in range(5):
        train, val = carve_validation(samples, 0.2, seed, groups)
        seen = {image for s in train for image in s.images}
        assert val and not any(image in seen for s in val for image in s.images)
        assert sorted(s.id for s in train + val) == sorted(s.id for s in samples)
    singles = [qa(i, f"own{i}.png") for i in range(50)]
    assert carve_validation(singles, 0.1, 3, image_groups(singles)) == carve_validation(singles, 0.1, 3)


@pytest.mark.parametrize("stem,split", [("llava_test_CQM-A", "test"), ("team-val", "validation"),
                                        ("my_data", "train"), ("contest", "train")])
def test_split_from_filename(stem, split):
    assert split_from_filename(stem) == split

"""ScienceQA from each of its forms (original release, Hub layout, LLaVA JSON) gives the same samples and meta."""

import json

import pytest
from PIL import Image

from lora_llava.data import load_splits
from lora_llava.data.images import load_image
from tests.conftest import smoke_config

PROBLEMS = {
    "1": {"question": "Which state is farthest north?", "choices": ["Ohio", "Texas"], "answer": 0, "hint": "",
          "image": "image.png", "task": "closed choice", "grade": "grade2", "subject": "social science",
          "topic": "geography", "category": "Geography", "skill": "Read a map", "lecture": "Maps have...",
          "solution": "Ohio is north.", "split": "train"},
    "2": {"question": "Which word is a noun?", "choices": ["run", "dog", "blue"], "answer": 1,
          "hint": "Read the list.", "image": None, "task": "closed choice", "grade": "grade7",
          "subject": "language science", "topic": "grammar", "category": "Nouns", "skill": "Nouns",
          "lecture": "", "solution": "Dog names a thing.", "split": "val"},
    "3": {"question": "Which is a mammal?", "choices": ["frog", "whale"], "answer": 1, "hint": "Look closely.",
          "image": "image.png", "task": "closed choice", "grade": "grade4", "subject": "natural science",
          "topic": "biology", "category": "Mammals", "skill": "Mammals", "lecture": "", "solution": "",
          "split": "test"},
}


@pytest.fixture()
def release(tmp_path):
    """A miniature original release: problems.json, pid_splits.json, images/<split>/<pid>/image.png."""
    (tmp_path / "problems.json").write_text(json.dumps(PROBLEMS))
    (tmp_path / "pid_splits.json").write_text(json.dumps(
        {"train": ["1"], "val": ["2"], "test": ["3", "404"], "trainval": ["1", "2"], "minitest": ["3"]}))
    for pid, split, color in (("1", "train", "red"), ("3", "test", "blue")):
        (tmp_path / "images" / split / pid).mkdir(parents=True)
        Image.new("RGB", (20, 10), color).save(tmp_path / "images" / split / pid / "image.png")
    return tmp_path


def load(*overrides):
    return load_splits(smoke_config("data.source=scienceqa", *overrides).data)


def test_original_release_splits_prompts_meta_and_images(release, caplog):
    splits = load(f"data.path={release}")
    assert sorted(splits) == ["test", "train", "validation"]  # "val" renamed; unions and mini splits not loaded
    assert "1 of the 2 pids of split 'test' are not in" in caplog.text  # absent pids are reported
    (noun,) = splits["validation"]
    assert noun.turns[0].text == "Context: Read the list.\nWhich word is a noun?\nA. run\nB. dog\nC. blue"
    assert noun.answer == "B" and noun.images == []  # text-only questions are kept
    assert noun.meta == {"pid": "2", "choices": ["run", "dog", "blue"], "answer_index": 1, "answer_letter": "B",
                         "hint": "Read the list.", "has_image": False, "subject": "language science",
                         "grade": "grade7", "topic": "grammar", "category": "Nouns", "skill": "Nouns",
                         "lecture": "", "solution": "Dog names a thing.", "task": "closed choice", "split": "val"}
    (mammal,) = splits["test"]
    assert mammal.turns[0].text.startswith("<image>\nContext: Look closely.\n")
    assert load_image(mammal.id, mammal.images[0]).getpixel((0, 0)) == (0, 0, 255)


def test_original_release_with_image_root_and_problems_file(release):
    splits = load(f"data.path={release / 'problems.json'}", f"data.image_root={release / 'images'}",
                  "data.prompt_format=QCM-LEA")
    (state,) = splits["train"]
    assert state.images == ["train/1/image.png"]  # relative, so checked against data.image_root
    # LLaVA's training moves the image first (conf/data/scienceqa.yaml sets image_placement: front).
    assert state.turns[0].text == ("Which state is farthest north?\nContext: N/A\nOptions: (A) Ohio (B) Texas"
                                   "\n<image>")
    assert state.answer == "Maps have... Ohio is north. The answer is A."
    front = load(f"data.path={release}", "data.prompt_format=QCM-A", "data.image_placement=front")
    assert front["train"][0].turns[0].text.startswith("<image>\nWhich state is farthest north?\nContext: N/A")


def test_hub_layout_from_local_parquet(tmp_path):
    import io

    from datasets import Dataset, Features, Sequence, Value
    from datasets import Image as ImageFeature

    buffer = io.BytesIO()
    Image.new("RGB", (12, 12), "green").save(buffer, "PNG")
    features = Features({"image": ImageFeature(), "question": Value("string"), "choices": Sequence(Value("string")),
                         "answer": Value("int8"), "hint": Value("string"), "subject": Value("string"),
                         "grade": Value("string"), "lecture": Value("string"), "solution": Value("string")})
    rows = {"image": [{"bytes": buffer.getvalue(), "path": None}, None], "question": ["Color?", "Noun?"],
            "choices": [["green", "red"], ["dog", "run"]], "answer": [0, 0], "hint": ["", "Pick one."],
            "subject": ["natural science", "language science"], "grade": ["grade1", "grade9"],
            "lecture": ["", ""], "solution": ["", ""]}
    Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "test-00000.parquet"))
    splits = load(f"data.data_files={{test: {tmp_path / 'test-00000.parquet'}}}")
    color, noun = splits["test"]
    assert (color.id, noun.id) == ("test-0", "test-1")
    assert color.turns[0].text == "<image>\nColor?\nA. green\nB. red" and color.answer == "A"
    assert isinstance(color.images[0], Image.Image) and load_image(color.id, color.images[0]).size == (12, 12)
    assert noun.images == [] and noun.meta["hint"] == "Pick one." and noun.meta["grade"] == "grade9"


def test_llava_json_with_and_without_problems(release):
    records = [{"id": "3", "image": "3/image.png", "conversations": [
        {"from": "human", "value": "<image>\nContext: Look closely.\nWhich is a mammal?\nA. frog\nB. whale"},
        {"from": "gpt", "value": "B"}]},
        {"id": "2", "conversations": [
            {"from": "human", "value": "Context: Read the list.\nWhich word is a noun?\nA. run\nB. dog\nC. blue"},
            {"from": "gpt", "value": "B"}]}]
    path = release / "llava_test_CQM-A.json"
    path.write_text(json.dumps(records))
    root = release / "images" / "test"
    parsed = load(f"data.path={path}", f"data.image_root={root}")
    assert list(parsed) == ["test"]  # split from LLaVA's file name
    mammal, noun = parsed["test"]
    assert mammal.meta == {"pid": "3", "choices": ["frog", "whale"], "answer_index": 1, "answer_letter": "B",
                           "hint": "Look closely.", "has_image": True}
    assert noun.meta["hint"] == "Read the list." and noun.meta["has_image"] is False
    assert load_image(mammal.id, mammal.images[0], root).size == (20, 10)
    known = load(f"data.path={path}", f"data.image_root={root}", f"data.scienceqa.problems={release / 'problems.json'}")
    assert known["test"][0].meta["subject"] == "natural science" and known["test"][1].meta["grade"] == "grade7"


def test_missing_path_says_what_to_give():
    with pytest.raises(ValueError, match="data.path is not set.*derek-thomas/ScienceQA"):
        load("data.path=null")

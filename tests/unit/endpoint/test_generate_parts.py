"""Annotations as the LLM reads them, parsing of responses, the judge's score line, shipped endpoint configs."""

import json
import re

import pytest
from omegaconf import OmegaConf

from lora_llava.checks import check_values
from lora_llava.config import EndpointConfig, GenerateConfig, JudgeConfig, compose
from lora_llava.endpoint.annotations import read_notes
from lora_llava.endpoint.generate import Unusable, parse, question_answer_pairs
from lora_llava.endpoint.judge import parse_pick, parse_scores
from lora_llava.errors import DataError


def gen_cfg(**values):
    return OmegaConf.merge(OmegaConf.structured(GenerateConfig), values)


def test_jsonl_and_csv_annotations(tmp_path):
    from PIL import Image

    Image.new("RGB", (200, 100)).save(tmp_path / "a.png")
    (tmp_path / "notes.jsonl").write_text(json.dumps(
        {"image": "a.png", "captions": ["A dog."], "boxes": [{"label": "dog", "box": [20, 10, 100, 50]}],
         "text": "Taken at noon."}) + "\n")
    note, = read_notes(gen_cfg(annotations=str(tmp_path / "notes.jsonl"), image_root=str(tmp_path)))
    assert note.context() == "A dog.\ndog: [0.100, 0.100, 0.500, 0.500]\n\nTaken at noon."
    (tmp_path / "notes.csv").write_text('image,captions,boxes\na.png,A dog. | A pet.,"[{""label"": ""dog"", '
                                        '""box"": [0.1, 0.2, 0.3, 0.4]}]"\n')
    note, = read_notes(gen_cfg(annotations=str(tmp_path / "notes.csv"), image_root=str(tmp_path)))
    assert note.captions == ["A dog.", "A pet."] and note.boxes == [("dog", [0.1, 0.2, 0.3, 0.4])]


def test_coco_annotations(tmp_path):
    (tmp_path / "captions.json").write_text(json.dumps({
        "images": [{"id": 7, "file_name": "000007.jpg", "width": 100, "height": 200}],
        "annotations": [{"image_id": 7, "caption": "Two cats. "}, {"image_id": 7, "caption": "Cats on a bed."}]}))
    (tmp_path / "instances.json").write_text(json.dumps({
        "categories": [{"id": 17, "name": "cat"}],
        "annotations": [{"image_id": 7, "category_id": 17, "bbox": [10, 20, 50, 100]}]}))
    note, = read_notes(gen_cfg(coco_captions=str(tmp_path / "captions.json"),
                               coco_instances=str(tmp_path / "instances.json")))
    assert (note.id, note.image) == ("7", "000007.jpg")
    assert note.context() == "Two cats.\nCats on a bed.\ncat: [0.100, 0.100, 0.600, 0.600]"


def test_bad_annotations_name_the_line(tmp_path):
    (tmp_path / "notes.jsonl").write_text('{"image": "a.png"}\n{"captions": ["no image"]}\n')
    with pytest.raises(DataError, match="line 2: every row needs an `image`"):
        read_notes(gen_cfg(annotations=str(tmp_path / "notes.jsonl")))
    (tmp_path / "px.jsonl").write_text(json.dumps({"image": "missing.png", "boxes": [{"label": "x", "box": [1, 2, 30, 40]}]}))
    with pytest.raises(DataError, match="in pixels but the image cannot be opened"):
        read_notes(gen_cfg(annotations=str(tmp_path / "px.jsonl"), image_root=str(tmp_path)))


@pytest.mark.parametrize("text, reason", [
    ("Sure! Here it is.\nQuestion:\nA?\nAnswer:\nB", "text before the first Question"),
    ("Question:\nA?\nQuestion:\nB?\nAnswer:\nC", "alternating"),
    ("Question:\nA?\nAnswer:\nB\nQuestion:\nC?", "no answer"),
    ("Question:\nA?\nAnswer:\n", "empty"),
])
def test_malformed_conversations(text, reason):
    with pytest.raises(Unusable, match=reason):
        question_answer_pairs(text)


def test_parse_kinds():
    from lora_llava.endpoint.annotations import Note

    note, cfg = Note("n1", "a.png"), gen_cfg()
    assert parse("conversation", "Question: What is it?\nAnswer: A dog.\nQuestion:\nWhy?\nAnswer:\nIt barks.",
                 note, cfg) == [("What is it?", "A dog."), ("Why?", "It barks.")]
    with pytest.raises(Unusable, match="one question"):
        parse("complex", "Question: A?\nAnswer: B\nQuestion: C?\nAnswer: D", note, cfg)
    question, answer = parse("detail", "A dog on grass.", note, cfg)[0]
    assert answer == "A dog on grass." and question.endswith((".", "?"))
    with pytest.raises(Unusable, match="coordinates"):
        parse("detail", "A dog at coordinates 0.1, 0.2.", note, cfg)


@pytest.mark.parametrize("text, scores", [
    ("8 6\nBecause.", (8.0, 6.0)), ("  7.5, 9\n", (7.5, 9.0)), ("**10 3**\nx", (10.0, 3.0)),
    ("Scores: 8 and 6", None), ("", None), ("11 3", None), ("8\n6", None),
])
def test_judge_score_line(text, scores):
    assert parse_scores(text) == scores


def test_arbitration_pick():
    assert [parse_pick(t) for t in ("1\nwhy", "**2**", "2.", "Answer 1", "")] == [1, 2, 2, None, None]


@pytest.mark.parametrize("path, schema", [("conf/endpoint/default.yaml", EndpointConfig),
                                          ("conf/generate/default.yaml", GenerateConfig)])
def test_shipped_configs_are_commented_key_by_key(path, schema):
    from pathlib import Path

    lines = (Path(__file__).resolve().parents[3] / path).read_text().splitlines()
    keys = [re.match(r"^(\w+):", line).group(1) for line in lines if re.match(r"^\w+:", line)]
    assert set(keys) == set(schema.__dataclass_fields__)
    assert all("#" in line for line in lines if re.match(r"^\w+:", line))
    judge = [line for line in (Path(__file__).resolve().parents[3] / "conf/eval/judge.yaml").read_text().splitlines()
             if line.startswith("  ")]
    assert {line.split(":")[0].strip() for line in judge} == set(JudgeConfig.__dataclass_fields__)


def test_generate_needs_its_inputs_before_anything_runs():
    with pytest.raises(ValueError, match="generate.annotations"):
        check_values(compose("instruct", ["stages=[generate]", "generate.output=x.json"]))
    with pytest.raises(ValueError, match="generate.output=FILE and data.path=FILE"):
        check_values(compose("smoke", ["stages=[generate,train]", "generate.annotations=a.jsonl"]))
    with pytest.raises(ValueError, match="generate.kinds"):
        check_values(compose("smoke", ["generate.kinds=[dialogue]"]))


def test_missing_key_variable_stops_at_start(monkeypatch):
    from lora_llava.checks import check_endpoint_ready

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY is not set"):
        check_endpoint_ready(compose("instruct", ["stages=[validate,train,eval]"]))
    check_endpoint_ready(compose("instruct", ["stages=[validate,train,eval]", "endpoint.api_key_env=null"]))


def test_missing_openai_package_says_which_extra(monkeypatch, tmp_path):
    import sys

    from lora_llava.endpoint.client import Endpoint
    from lora_llava.errors import UserError

    monkeypatch.setitem(sys.modules, "openai", None)  # as if it were not installed
    endpoint = Endpoint(compose("smoke", ["endpoint.api_key_env=null"]).endpoint, tmp_path / "cache.jsonl")
    with pytest.raises(UserError, match=r"pip install 'lora_llava\[endpoint\]'"):
        _ = endpoint.client


def test_send_image_puts_the_image_in_the_request(tmp_path):
    from PIL import Image

    from lora_llava.endpoint.annotations import Note
    from lora_llava.endpoint.generate import messages_for

    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "a.png")
    note = Note("a", "a.png", ["A red square."])
    plain = messages_for(note, "detail", gen_cfg(image_root=str(tmp_path)))
    assert plain[-1] == {"role": "user", "content": "A red square."}
    assert [m["role"] for m in plain] == ["system", "user", "assistant", "user"]  # the seed is a worked example
    text, image = messages_for(note, "detail", gen_cfg(image_root=str(tmp_path), send_image=True))[-1]["content"]
    assert text == {"type": "text", "text": "A red square."}
    assert image["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
    with pytest.raises(DataError, match="not found"):
        messages_for(Note("b", "b.png"), "detail", gen_cfg(image_root=str(tmp_path), send_image=True))

"""Data as real files come: spreadsheet encodings, odd image fields, records without a question, repeated ids,
empty splits and a column mapping that misses the images. Each is a clear error or a per-sample rejection that
data.on_error=skip honours, never a crash or a silently changed sample."""

import json
import logging
import os
import re

import pytest
from PIL import Image

from lora_llava.data import load_splits, require_split
from lora_llava.data.images import load_image
from lora_llava.data.llava_json import record_to_sample
from lora_llava.data.samples import SampleError, with_suffix
from lora_llava.data.screen import TooManyRejected, screen, screen_split
from lora_llava.errors import ConfigError, DataError
from tests.conftest import smoke_config

ROWS = [("a.png", "What colour?", "red"), ("b.png", "Which shape?", "a square")]


def _jsonl_cfg(path, *overrides):
    return smoke_config("data=jsonl", f"data.path={path}", f"data.image_root={path.parent}", "data.val_fraction=0",
                        *overrides).data


def _images(tmp_path):
    for name, *_ in ROWS:
        Image.new("RGB", (8, 8), "red").save(tmp_path / name)


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_utf8_csv_with_or_without_a_byte_order_mark(tmp_path, bom):
    _images(tmp_path)
    path = tmp_path / "train.csv"
    path.write_bytes(bom + b"image,question,answer\n" + "".join(
        f"{i},{q},{a} – ü\n" for i, q, a in ROWS).encode())
    samples = load_splits(_jsonl_cfg(path))["train"]
    assert [s.images for s in samples] == [["a.png"], ["b.png"]]  # the first column is `image`, not '\ufeffimage'
    assert samples[0].answer == "red – ü"


@pytest.mark.parametrize(("name", "content", "line"), [
    ("train.csv", "image,question,answer\na.png,Où ?,là\n".encode("latin-1"), 2),
    ("train.jsonl", '{"question": "q", "answer": "a"}\n{"question": "é", "answer": "a"}\n'.encode("cp1252"), 2),
    ("train.csv", "image,question,answer\n".encode("utf-16"), 1),
])
def test_other_encodings_name_file_and_line(tmp_path, name, content, line):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"{path}, line {line}: not UTF-8"):
        load_splits(_jsonl_cfg(path))


@pytest.mark.parametrize(("ref", "reason"), [
    (b"", "empty (0 bytes)"),
    ("a\x00b.png", "NUL"),
    ("x" * 300 + ".png", "too long"),
    ("/".join(["d" * 200] * 25) + ".png", "too long"),
])
def test_odd_image_fields_are_rejected_per_sample(ref, reason, tmp_path):
    with pytest.raises(SampleError, match=re.escape(reason)):
        load_image("s1", ref, tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_image_is_rejected_per_sample(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(path)
    path.chmod(0)
    with pytest.raises(SampleError, match="permission denied"):
        load_image("s1", "a.png", tmp_path)


def test_bad_image_fields_are_skipped_with_on_error_skip(tmp_path, tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    _images(tmp_path)
    rows = [{"image": "a.png", "question": "q", "answer": "red"}] * 8 + [
        {"image": "a\x00.png", "question": "q", "answer": "red"},
        {"image": "y" * 400, "question": "q", "answer": "red"}]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _jsonl_cfg(path, "data.on_error=skip", "data.max_skip_fraction=0.25")
    kept = screen_split(load_splits(cfg)["train"], cfg, processor, tmp_path, "train")
    assert len(kept) == 8
    rejected = [json.loads(line) for line in (tmp_path / "rejected.jsonl").open()]
    assert [r["id"] for r in rejected] == ["train:9", "train:10"]


def test_empty_image_bytes_from_a_dataset_are_not_trained_as_text_only():
    from lora_llava.data.hf import image_refs

    assert image_refs({"bytes": b"", "path": None}) == [b""]  # kept, so screening rejects it by its id
    assert image_refs(None) == []


@pytest.mark.parametrize("conversations", [
    [{"from": "gpt", "value": "an answer to nothing"}],
    [{"from": "gpt", "value": "hello"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
    [{"from": "human", "value": "  "}, {"from": "gpt", "value": "a"}],
])
def test_records_without_a_user_turn_are_rejected_not_crashed_on(conversations, tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    sample = with_suffix(record_to_sample({"id": "r1", "conversations": conversations}, "f:0"), "Answer briefly.")
    result = screen([sample], smoke_config().data, processor, "train")
    assert not result.kept and result.rejected[0][1].sample_id == "r1"
    assert "user turn" in result.rejected[0][1].reason


def test_duplicate_ids_are_renamed_with_a_warning(tmp_path, caplog):
    records = [{"id": "x", "conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": "a"}]}
               for i in range(3)]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records))
    cfg = smoke_config("data=llava_json", f"data.path={path}", "data.val_fraction=0").data
    with caplog.at_level(logging.WARNING, logger="lora_llava"):
        samples = load_splits(cfg)["train"]
    assert [s.id for s in samples] == ["x", "x#2", "x#3"]
    assert "2 sample(s) repeat an id" in caplog.text


def test_an_unmapped_image_column_is_said(tmp_path):
    _images(tmp_path)
    path = tmp_path / "train.csv"
    path.write_text("picture,question,answer\n" + "".join(f"{i},{q},{a}\n" for i, q, a in ROWS))
    with pytest.raises(DataError, match="column 'picture' holds image file names.*data.columns.image=picture"):
        load_splits(_jsonl_cfg(path))
    assert load_splits(_jsonl_cfg(path, "data.columns.image=picture"))["train"][0].images == ["a.png"]


def test_an_empty_or_missing_split_is_an_error_naming_the_key(tmp_path):
    with pytest.raises(DataError, match="data.train_split='train': the split has no samples"):
        require_split({"train": []}, "train", "data.train_split")
    with pytest.raises(ConfigError, match="eval.split='test'.*train, validation"):
        require_split({"train": [1], "validation": [1]}, "test", "eval.split")


def test_an_empty_file_or_one_emptied_by_skipping_stops_before_weights_load(tmp_path, monkeypatch):
    from lora_llava.train import stage

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(stage, "build_model_and_processor", no_weights)
    empty = tmp_path / "train.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no samples"):
        stage.train(smoke_config("data=jsonl", f"data.path={empty}", "stages=[train]"), tmp_path)
    bad = tmp_path / "bad_train.jsonl"
    bad.write_text('{"question": "q", "answer": ""}\n' * 4)
    with pytest.raises(TooManyRejected, match="4 of 4 train samples"):
        stage.train(smoke_config("data=jsonl", f"data.path={bad}", "data.on_error=skip", "data.val_fraction=0",
                                 "stages=[train]"), tmp_path)

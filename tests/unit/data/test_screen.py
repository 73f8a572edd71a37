"""Every kind of bad input is caught before training, by name: data.on_error=raise stops with the sample id, the
file and the reason; skip leaves exactly the bad samples out, lists them, and stops past max_skip_fraction."""

import json

import pytest
from PIL import Image

from lora_llava.data.samples import Sample, SampleError, Turn
from lora_llava.data.screen import TooManyRejected, screen_split
from tests.conftest import smoke_config


def qa(sample_id, question="<image>\nWhat color?", answer="red", images=("ok.png",)):
    return Sample(sample_id, [Turn("user", question), Turn("assistant", answer)], list(images))


@pytest.fixture()
def image_dir(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (32, 32), "red").save(root / "ok.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png at all")
    full = (root / "ok.png").read_bytes()
    Image.new("RGB", (64, 64), "blue").save(root / "big.png")
    Image.effect_noise((64, 64), 50).convert("RGB").save(root / "noise.png")
    (root / "truncated.png").write_bytes((root / "noise.png").read_bytes()[:400])
    (tmp_path / "outside.png").write_bytes(full)
    return root


def data_cfg(image_root, *overrides):
    return smoke_config(f"data.image_root={image_root}", *overrides).data


# (case, sample, reason the message must give, file it must name or None)
BAD = [
    ("missing image", qa("m1", images=["nope.png"]), "image file not found", "nope.png"),
    ("corrupt file", qa("c1", images=["corrupt.png"]), "cannot decode image", "corrupt.png"),
    ("truncated file", qa("t1", images=["truncated.png"]), "truncated", "truncated.png"),
    ("absolute path", qa("a1", images=["/etc/hostname"]), "absolute image path", "/etc/hostname"),
    ("path escaping the root", qa("e1", images=["../outside.png"]), "escapes the image root", "../outside.png"),
    ("more <image> tags than images", qa("k1", "<image>\n<image>\nSame?"), "2 <image> tag(s) but 1 image(s)", None),
    ("fewer <image> tags than images", qa("k2", "What color?"), "0 <image> tag(s) but 1 image(s)", None),
    ("empty answer", qa("n1", answer="  "), "empty or missing answer", None),
    ("missing answer", Sample("n2", [Turn("user", "<image>\nQ?")], ["ok.png"]), "empty or missing answer", None),
    ("unknown role", Sample("r1", [Turn("user", "<image>\nQ?"), Turn("bot", "A")], ["ok.png"]),
     "unknown role 'bot'", None),
    ("too many tokens", qa("l1", "<image>\n" + "word " * 200), "exceed data.max_length=128", None),
]


@pytest.mark.parametrize("case,sample,reason,path", BAD, ids=[b[0] for b in BAD])
def test_raise_names_sample_file_and_reason(tiny_model_and_processor, image_dir, case, sample, reason, path):
    _, processor = tiny_model_and_processor
    good = [qa(f"good-{i}") for i in range(3)]
    with pytest.raises(SampleError) as err:
        screen_split(good + [sample], data_cfg(image_dir), processor, image_dir.parent, "train")
    message = str(err.value)
    assert f"sample {sample.id!r}" in message and reason in message, message
    if path:
        assert path in message, message
    assert "data.on_error=skip" in message  # says what to do


def test_decompression_bomb_is_refused(tiny_model_and_processor, image_dir, monkeypatch):
    _, processor = tiny_model_and_processor
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)  # big.png (4,096 px) is over twice this limit
    with pytest.raises(SampleError, match=r"'b1' \(.*big.png\): image exceeds the decompression-bomb limit"):
        screen_split([qa("b1", images=["big.png"])], data_cfg(image_dir), processor, image_dir.parent, "train")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # between 1x and 2x Pillow only warns: refused too
    with pytest.raises(SampleError, match=r"'b2' .*decompression-bomb"):
        screen_split([qa("b2", images=["big.png"])], data_cfg(image_dir), processor, image_dir.parent, "train")


def test_skip_leaves_out_exactly_the_bad_ones(tiny_model_and_processor, image_dir, capsys):
    _, processor = tiny_model_and_processor
    good = [qa(f"good-{i}") for i in range(30)] + [qa("text-only", "What is 2+2?", "4", images=())]
    bad = [case[1] for case in BAD]
    mixed = [s for pair in zip(good, bad) for s in pair] + good[len(bad):]
    cfg = data_cfg(image_dir, "data.on_error=skip", "data.max_skip_fraction=0.5")
    kept = screen_split(mixed, cfg, processor, image_dir.parent, "train")
    assert [s.id for s in kept] == [s.id for s in good]  # every good sample, in order
    lines = [json.loads(x) for x in (image_dir.parent / "rejected.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == [s.id for s in bad]
    assert all(r["split"] == "train" and r["reason"] for r in lines)
    assert next(r for r in lines if r["id"] == "m1")["path"].endswith("nope.png")
    assert f"skipped {len(bad)} of {len(mixed)} train samples" in capsys.readouterr().out


def test_skip_stops_past_max_skip_fraction(tiny_model_and_processor, image_dir):
    _, processor = tiny_model_and_processor
    samples = [qa("g1"), qa("g2"), qa("g3"), qa("m1", images=["nope.png"])]
    cfg = data_cfg(image_dir, "data.on_error=skip", "data.max_skip_fraction=0.2")
    with pytest.raises(TooManyRejected, match=r"1 of 4 train samples \(25.0%\).*max_skip_fraction=0.2.*rejected.jsonl"):
        screen_split(samples, cfg, processor, image_dir.parent, "train")
    assert "m1" in (image_dir.parent / "rejected.jsonl").read_text()


def test_eval_screening_measures_the_prompt_only(tiny_model_and_processor, image_dir):
    _, processor = tiny_model_and_processor
    long_answer = qa("x", answer="word " * 200)
    cfg = data_cfg(image_dir)
    with pytest.raises(SampleError, match="exceed"):
        screen_split([long_answer], cfg, processor, image_dir.parent, "train")
    assert screen_split([long_answer], cfg, processor, image_dir.parent, "test", generation=True) == [long_answer]

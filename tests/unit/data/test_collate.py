"""Labels of collated batches: only the assistant's answers (and their EOS) are supervised."""

import pytest
from PIL import Image

from lora_llava.data.collate import IGNORE_INDEX, Collator, image_token_count
from lora_llava.data.samples import Sample, SampleError, Turn


def _supervised_text(processor, batch, row):
    ids = batch["input_ids"][row][batch["labels"][row] != IGNORE_INDEX]
    return processor.tokenizer.decode(ids)


def test_only_answer_tokens_are_unmasked(tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    samples = [
        Sample("a", [Turn("user", "<image>\nWhat color is the shape?"), Turn("assistant", "red")],
               [Image.new("RGB", (32, 32), "red")]),
        Sample("b", [Turn("user", "Hello there, how are you today?"), Turn("assistant", "fine thanks")]),
    ]
    batch = Collator(processor)(samples)
    eos = processor.tokenizer.eos_token
    assert _supervised_text(processor, batch, 0).strip() == f"red{eos}"
    assert _supervised_text(processor, batch, 1).strip() == f"fine thanks{eos}"
    # image positions and right padding are masked
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    assert (batch["labels"][batch["input_ids"] == image_id] == IGNORE_INDEX).all()
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    assert (batch["input_ids"][0] == image_id).sum() == image_token_count(processor)
    assert batch["pixel_values"].shape[0] == 1


def test_multi_turn_supervises_every_assistant_turn(tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    sample = Sample("m", [Turn("user", "<image>\nWhat color?"), Turn("assistant", "blue"),
                          Turn("user", "Where is it?"), Turn("assistant", "top left")],
                    [Image.new("RGB", (32, 32), "blue")])
    batch = Collator(processor)([sample])
    eos = processor.tokenizer.eos_token
    text = _supervised_text(processor, batch, 0)
    assert text.replace(" ", "") == f"blue{eos}topleft{eos}".replace(" ", "")
    assert "Where" not in text and "USER" not in text


def test_too_long_sample_is_an_error_not_a_truncation(tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    sample = Sample("long", [Turn("user", "<image>\n" + "word " * 50), Turn("assistant", "red")],
                    [Image.new("RGB", (32, 32))])
    with pytest.raises(SampleError, match="'long'.*exceed data.max_length=40"):
        Collator(processor, max_length=40)([sample])


def test_generation_batches_are_left_padded_without_answers(tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    samples = [Sample("x", [Turn("user", "short"), Turn("assistant", "secret")]),
               Sample("y", [Turn("user", "a much longer question than the first"), Turn("assistant", "z")])]
    batch = Collator(processor, generation=True)(samples)
    assert "labels" not in batch
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1
    assert "secret" not in processor.tokenizer.decode(batch["input_ids"][0])
    assert processor.tokenizer.decode(batch["input_ids"][1]).endswith("ASSISTANT:")

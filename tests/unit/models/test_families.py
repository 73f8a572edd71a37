"""Every family, table-driven over the tiny builds: the image-token count predicted before any weights load equals
the model's own image-feature count for images of many sizes and aspect ratios (so "image features and image
tokens do not match" cannot happen), labels cover exactly each answer and its end-of-turn token, and
model.max_image_tiles caps the tiles."""

import pytest
import torch
from PIL import Image

from lora_llava.config import compose
from lora_llava.data.collate import IGNORE_INDEX, Collator
from lora_llava.data.samples import Sample, Turn
from lora_llava.data.screen import check_sample
from lora_llava.errors import ConfigError
from lora_llava.models.families import family_for_config
from lora_llava.models.load import build_model_and_processor

TINY = ["tiny", "tiny-next", "tiny-onevision"]
# (width, height): square, tiny, huge, 1x20 and 20x1 strips, wide and tall panoramas, odd sizes
SIZES = [(32, 32), (1, 1), (3, 5), (1, 20), (20, 1), (64, 32), (32, 64), (640, 480), (480, 640), (1000, 37),
         (37, 1000), (333, 97), (96, 96), (2000, 1500), (50, 400)]


@pytest.fixture(scope="module", params=TINY)
def tiny(request):
    cfg = compose("smoke", [f"model.path={request.param}", "train.report_to=[]"])
    model, processor = build_model_and_processor(cfg.model, cfg.quant)
    return request.param, model.eval(), processor


def _image(size, i):
    return Image.new("RGB", size, (30 * i % 255, 200, 90))


def _samples():
    """One image per sample for every size, a two-image sample and a text-only one, with varied answers."""
    out = [Sample(f"s{i}", [Turn("user", "<image>\nWhat color is the shape?"), Turn("assistant", f"red {i}")],
                  [_image(size, i)]) for i, size in enumerate(SIZES)]
    out.append(Sample("two", [Turn("user", "<image> and <image>\nSame colour?"), Turn("assistant", "yes"),
                              Turn("user", "Where is the shape?"), Turn("assistant", "top left")],
                      [_image((40, 20), 1), _image((20, 40), 2)]))
    out.append(Sample("text", [Turn("user", "Which of these is a mammal?"), Turn("assistant", "A")]))
    return out


def _feature_counts(model, batch) -> list[int]:
    """Rows of image features the model itself produces for each image of the batch."""
    keys = [k for k in ("pixel_values", "image_sizes", "batch_num_images") if k in batch]
    config = model.config
    extra = {"vision_aspect_ratio": config.vision_aspect_ratio} if hasattr(config, "vision_aspect_ratio") else {}
    with torch.no_grad():
        out = model.model.get_image_features(**{k: batch[k] for k in keys},
                                             vision_feature_layer=config.vision_feature_layer,
                                             vision_feature_select_strategy=config.vision_feature_select_strategy,
                                             **extra)
    feats = out.pooler_output if hasattr(out, "pooler_output") else out
    return [f.shape[0] for f in feats] if isinstance(feats, (list, tuple)) else [feats.shape[1]] * feats.shape[0]


def test_predicted_image_tokens_equal_the_models_features(tiny):
    name, model, processor = tiny
    samples = _samples()
    collator = Collator(processor)
    batch = collator(samples)
    predicted = [n for s in samples for n in collator.image_token_counts(s)]
    assert predicted == _feature_counts(model, batch)
    # screening (no model, sizes from the files) predicts the same per-sample lengths as the batch holds
    for row, sample in enumerate(samples):
        assert check_sample(sample, collator)[0] == int(batch["attention_mask"][row].sum())
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    assert (batch["input_ids"] == image_id).sum().item() == sum(predicted)
    # the config alone (what the planner has) gives the same count for single images
    family = family_for_config(model.config)
    single = [family.image_tokens_for_size(model.config, size[::-1]) for size in SIZES]
    assert single == predicted[: len(SIZES)]
    if name != "tiny":  # anyres: the count follows the image's size
        assert len(set(single)) > 3
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)  # the forward pass that crashes on a mismatch


def test_labels_are_each_answer_and_its_end_of_turn(tiny):
    _, _, processor = tiny
    samples = _samples()
    batch = Collator(processor)(samples)
    eos = processor.tokenizer.eos_token
    for row, sample in enumerate(samples):
        ids = batch["input_ids"][row][batch["labels"][row] != IGNORE_INDEX]
        supervised = processor.tokenizer.decode(ids)
        answers = [t.text for t in sample.turns if t.role == "assistant"]
        assert supervised.replace(" ", "") == "".join(f"{a}{eos}" for a in answers).replace(" ", "")
        assert supervised.count(eos) == len(answers)


def test_generation_prompt_ends_where_the_answer_starts(tiny):
    _, _, processor = tiny
    sample = _samples()[0]
    train = Collator(processor)([sample])
    prompt = Collator(processor, generation=True)([sample])["input_ids"][0].tolist()
    full = train["input_ids"][0].tolist()
    assert full[: len(prompt)] == prompt
    assert (train["labels"][0][: len(prompt)] == IGNORE_INDEX).all()


def test_max_image_tiles_caps_tiles_in_processor_and_model():
    cfg = compose("smoke", ["model.path=tiny-next", "model.max_image_tiles=2", "train.report_to=[]"])
    model, processor = build_model_and_processor(cfg.model, cfg.quant)
    assert all((h // 32) * (w // 32) <= 2 for h, w in model.config.image_grid_pinpoints)
    assert processor.image_processor.image_grid_pinpoints == model.config.image_grid_pinpoints
    sample = Sample("big", [Turn("user", "<image>\nWhat?"), Turn("assistant", "red")], [_image((640, 640), 1)])
    batch = Collator(processor)([sample])
    assert batch["pixel_values"].shape[1] <= 3  # the base view and at most two tiles
    assert _feature_counts(model.eval(), batch) == Collator(processor).image_token_counts(sample)

    uncapped = compose("smoke", ["model.path=tiny-next", "train.report_to=[]"])
    _, full = build_model_and_processor(uncapped.model, uncapped.quant)
    assert Collator(full).image_token_counts(sample)[0] > Collator(processor).image_token_counts(sample)[0]


def test_max_image_tiles_is_refused_where_images_have_no_tiles():
    cfg = compose("smoke", ["model.max_image_tiles=2", "train.report_to=[]"])
    with pytest.raises(ConfigError, match="model.max_image_tiles=2.*no tiles"):
        build_model_and_processor(cfg.model, cfg.quant)


def test_pixel_cache_keeps_every_tile_and_the_image_sizes(tiny, tmp_path):
    from lora_llava.data.image_cache import PixelCache

    _, _, processor = tiny
    samples = _samples()[:6] + _samples()[-2:]
    for i, sample in enumerate(samples):  # files, so that the cache has something to key on
        for j, image in enumerate(sample.images):
            image.save(tmp_path / f"{i}-{j}.png")
            sample.images[j] = f"{i}-{j}.png"
    plain = Collator(processor, image_root=tmp_path)(samples)
    cache = PixelCache(processor.image_processor, tmp_path / "cache")
    cached = Collator(processor, image_root=tmp_path, image_cache=cache)
    first, second = cached(samples), cached(samples)
    assert cache.hits == cache.misses == sum(len(s.images) for s in samples)
    assert plain.keys() == second.keys()
    for key in plain:
        assert torch.equal(first[key], plain[key]) and torch.equal(second[key], plain[key]), key


def test_length_grouping_sees_each_images_token_count(tiny):
    from lora_llava.train.sampling import sample_lengths

    _, _, processor = tiny
    samples = _samples()
    collator = Collator(processor)
    exact = [len(collator.encode(s)["input_ids"]) for s in samples]
    assert all(abs(a - b) <= 2 for a, b in zip(sample_lengths(samples, collator), exact))


def test_planner_lengths_count_each_images_tokens_from_files_under_image_root(tiny, tmp_path):
    """stages=[plan] measures rows without screening; with relative image paths it must read each file's size
    under data.image_root (anyres families count tokens from it), giving screening's exact counts."""
    from lora_llava.data.lengths import measure
    from lora_llava.data.screen import screen

    name, _, processor = tiny
    samples = _samples()[:8] + _samples()[-2:]
    for i, sample in enumerate(samples):
        for j, image in enumerate(sample.images):
            image.save(tmp_path / f"{i}-{j}.png")
            sample.images[j] = f"{i}-{j}.png"
    data = compose("smoke", [f"model.path={name}", f"data.image_root={tmp_path}", "data.max_length=100000"]).data
    measured = measure(samples, processor, data)
    assert not measured.refused
    assert measured.tokens == screen(samples, data, processor, "train").lengths().tokens
    if name != "tiny":  # anyres: the rows of different image sizes differ in length
        assert len({t for t, n in zip(measured.tokens, measured.images) if n == 1}) > 1


def test_llavas_serving_template_renders_the_training_format():
    """The template a merged LLaVA-1.5 folder gets (its processor has none) prompts a server exactly as training
    rendered the conversation: system prompt, image placement, turns, end of each answer."""
    from transformers import AutoProcessor

    from lora_llava.models.families import family_for_processor
    from lora_llava.models.tiny import tiny_checkpoint

    processor = AutoProcessor.from_pretrained(tiny_checkpoint(0))
    family = family_for_processor(processor)
    turns = [Turn("user", "<image>\nWhat colour is it?"), Turn("assistant", "red"), Turn("user", "Where?")]
    trained, _ = family.render(processor, turns, "Be brief.", generation_prompt=True)
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]},
                {"role": "assistant", "content": "red"}, {"role": "user", "content": "Where?"}]
    served = processor.apply_chat_template(messages, chat_template=family.serving_template(processor),
                                           add_generation_prompt=True, tokenize=False)
    assert served == trained

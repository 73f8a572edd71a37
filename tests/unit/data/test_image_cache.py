"""The pixel cache returns exactly what the processor returns, serves later epochs from disk, is invalidated by a
changed file or processor, stays under its bound, and keeps bad files as loud as without it."""

import time

import pytest
import torch
from PIL import Image

from lora_llava.data.collate import Collator
from lora_llava.data.image_cache import PixelCache, processor_fingerprint
from lora_llava.data.samples import Sample, SampleError, Turn


def _images(folder, n=4):
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.new("RGB", (40 + 7 * i, 30 + 5 * i), (40 * i, 200 - 30 * i, 90)).save(path)
        paths.append(path.name)
    return paths


def _sample(i, ref):
    return Sample(f"s{i}", [Turn("user", "<image>\nWhat color?"), Turn("assistant", "red")], [ref])


def test_cached_pixels_equal_the_processors_and_hit_on_the_next_epoch(tiny_model_and_processor, tmp_path):
    _, processor = tiny_model_and_processor
    refs = _images(tmp_path)
    samples = [_sample(i, ref) for i, ref in enumerate(refs)]
    cache = PixelCache(processor.image_processor, tmp_path / "cache")
    plain = Collator(processor, image_root=tmp_path)(samples)
    cached = Collator(processor, image_root=tmp_path, image_cache=cache)
    first, second = cached(samples), cached(samples)
    assert torch.equal(first["pixel_values"], plain["pixel_values"])
    assert torch.equal(second["pixel_values"], plain["pixel_values"])
    assert (cache.misses, cache.hits) == (4, 4)


def test_a_changed_file_or_processor_is_a_miss(tiny_model_and_processor, tmp_path):
    _, processor = tiny_model_and_processor
    refs = _images(tmp_path, 1)
    cache = PixelCache(processor.image_processor, tmp_path / "cache")
    cache.pixel_values([("s0", refs[0])], tmp_path)
    time.sleep(0.01)
    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / refs[0])  # same name, new content
    new = cache.pixel_values([("s0", refs[0])], tmp_path)
    assert cache.misses == 2
    expected = processor.image_processor(images=[Image.open(tmp_path / refs[0]).convert("RGB")],
                                         return_tensors="pt")["pixel_values"]
    assert torch.equal(new, expected)

    other = processor.image_processor.__class__(**{**processor.image_processor.to_dict(), "image_mean": [0.5] * 3})
    assert processor_fingerprint(other) != processor_fingerprint(processor.image_processor)
    other_cache = PixelCache(other, tmp_path / "cache")
    other_cache.pixel_values([("s0", refs[0])], tmp_path)
    assert other_cache.misses == 1 and other_cache.hits == 0


def test_the_folder_stays_under_its_bound_and_keeps_the_recent_entries(tiny_model_and_processor, tmp_path):
    _, processor = tiny_model_and_processor
    refs = _images(tmp_path, 6)
    entry_bytes = 3 * 32 * 32 * 4 + 400  # one float32 32x32 image and its .npz (zip + .npy) headers
    cache = PixelCache(processor.image_processor, tmp_path / "cache", max_gb=3.5 * entry_bytes / 1024**3)
    for i, ref in enumerate(refs):
        cache.pixel_values([(f"s{i}", ref)], tmp_path)
        time.sleep(0.01)  # distinct modification times: the eviction order is by last use
    files = list((tmp_path / "cache").rglob("*.npz"))
    assert 1 <= len(files) <= 3
    assert sum(f.stat().st_size for f in files) <= cache.max_bytes
    cache.pixel_values([("s5", refs[-1])], tmp_path)
    assert cache.hits == 1, "the most recently written entry survives eviction"


def test_missing_files_and_escaping_paths_still_fail_loudly(tiny_model_and_processor, tmp_path):
    _, processor = tiny_model_and_processor
    cache = PixelCache(processor.image_processor, tmp_path / "cache")
    with pytest.raises(SampleError, match="not found"):
        cache.pixel_values([("s9", "absent.png")], tmp_path)
    with pytest.raises(SampleError, match="escapes"):
        cache.pixel_values([("s9", "../outside.png")], tmp_path)


def test_in_memory_images_bypass_the_disk(tiny_model_and_processor, tmp_path):
    _, processor = tiny_model_and_processor
    cache = PixelCache(processor.image_processor, tmp_path / "cache")
    pixels = cache.pixel_values([("s0", Image.new("RGB", (32, 32), "blue"))])
    assert pixels.shape == (1, 3, 32, 32) and not (tmp_path / "cache").exists()

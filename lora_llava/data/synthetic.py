"""Coloured shapes drawn in code: every answer depends only on the image, so a model that scores well must
be reading the pixels. Used by the smoke recipe and the tests; no files, no network."""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from lora_llava.data.samples import IMAGE_PLACEHOLDER, Sample, Turn

COLORS = {
    "red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220),
    "yellow": (235, 215, 20), "purple": (140, 40, 170), "black": (10, 10, 10),
}
SHAPES = ("circle", "square", "triangle")
PLACES = ("top left", "top right", "bottom left", "bottom right")
QUESTIONS = {"color": "What color is the shape?", "place": "Where is the shape?"}


def draw(shape: str, color: str, place: str, size: int, rng: random.Random) -> Image.Image:
    """One filled shape inside the quadrant `place`, at a random size and offset."""
    image = Image.new("RGB", (size, size), (245, 245, 245))
    pen = ImageDraw.Draw(image)
    half = size // 2
    extent = rng.randint(half * 6 // 10, half - 1)
    x0 = rng.randint(0, half - extent) + (half if place.endswith("right") else 0)
    y0 = rng.randint(0, half - extent) + (half if place.startswith("bottom") else 0)
    box = (x0, y0, x0 + extent - 1, y0 + extent - 1)
    fill = COLORS[color]
    if shape == "circle":
        pen.ellipse(box, fill=fill)
    elif shape == "square":
        pen.rectangle(box, fill=fill)
    else:
        pen.polygon([(x0 + extent // 2, y0), (x0, y0 + extent - 1), (x0 + extent - 1, y0 + extent - 1)], fill=fill)
    return image


def make_samples(n: int, size: int, seed: int, prefix: str) -> list[Sample]:
    rng = random.Random(seed)
    samples = []
    for i in range(n):
        shape, color, place = rng.choice(SHAPES), rng.choice(list(COLORS)), rng.choice(PLACES)
        kind = rng.choice(list(QUESTIONS))
        answer = color if kind == "color" else place
        turns = [Turn("user", f"{IMAGE_PLACEHOLDER}\n{QUESTIONS[kind]}"), Turn("assistant", answer)]
        meta = {"question_type": kind, "image_only": True}
        samples.append(Sample(f"{prefix}-{i}", turns, [draw(shape, color, place, size, rng)], meta))
    return samples


def load_synthetic(cfg) -> dict[str, list[Sample]]:
    """train / validation / test splits, each from its own seed so no image repeats across splits."""
    s = cfg.synthetic
    return {
        "train": make_samples(s.n_train, s.image_size, s.seed, "train"),
        "validation": make_samples(s.n_eval, s.image_size, s.seed + 1, "val"),
        "test": make_samples(s.n_eval, s.image_size, s.seed + 2, "test"),
    }

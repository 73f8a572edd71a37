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
# Brief-description instructions in the manner of LLaVA's pretraining captions (blip_laion_cc_sbu_558k.json).
CAPTION_INSTRUCTIONS = ("Give a brief description of the image.", "Describe the image concisely.",
                        "Share a concise interpretation of the image provided.",
                        "Write a terse but informative summary of the picture.")


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


def question(shape: str, color: str, place: str, rng: random.Random) -> tuple[str, str, dict]:
    """(user text, answer, meta) for a colour or place question."""
    kind = rng.choice(list(QUESTIONS))
    return QUESTIONS[kind], color if kind == "color" else place, {"question_type": kind, "image_only": True}


def caption(shape: str, color: str, place: str, rng: random.Random) -> tuple[str, str, dict]:
    """(instruction, caption, meta): a pretraining-style pair whose caption names everything drawn."""
    return rng.choice(CAPTION_INSTRUCTIONS), f"a {color} {shape} in the {place}", {"image_only": True}


def make_samples(n: int, size: int, seed: int, prefix: str, task: str = "qa") -> list[Sample]:
    """`task`: qa (a colour or place question) or caption (a brief description, as in LLaVA's stage 1)."""
    rng = random.Random(seed)
    write = caption if task == "caption" else question
    samples = []
    for i in range(n):
        shape, color, place = rng.choice(SHAPES), rng.choice(list(COLORS)), rng.choice(PLACES)
        text, answer, meta = write(shape, color, place, rng)
        turns = [Turn("user", f"{IMAGE_PLACEHOLDER}\n{text}"), Turn("assistant", answer)]
        samples.append(Sample(f"{prefix}-{i}", turns, [draw(shape, color, place, size, rng)], meta))
    return samples


def load_synthetic(cfg) -> dict[str, list[Sample]]:
    """train / validation / test splits, each from its own seed so no image repeats across splits."""
    s = cfg.synthetic
    return {
        "train": make_samples(s.n_train, s.image_size, s.seed, "train", s.task),
        "validation": make_samples(s.n_eval, s.image_size, s.seed + 1, "val", s.task),
        "test": make_samples(s.n_eval, s.image_size, s.seed + 2, "test", s.task),
    }

"""Where `<image>` placeholders sit in a turn (`data.image_placement`).

`keep` leaves the text as written. `front` is what LLaVA's training code does to every turn before tokenizing
(`preprocess_multimodal`): the placeholder is taken out, the text stripped, and `<image>\\n` put first. Formats that
write the placeholder last (LLaVA's original ScienceQA files, `...\\n<image>`) are therefore seen image-first by
LLaVA models. With several images in one turn, `front` keeps all of them, in order.
"""

from __future__ import annotations

from dataclasses import replace

from lora_llava.data.samples import IMAGE_PLACEHOLDER, Sample, Turn
from lora_llava.errors import ConfigError


def front(text: str) -> str:
    n = text.count(IMAGE_PLACEHOLDER)
    if not n:
        return text
    return (f"{IMAGE_PLACEHOLDER}\n" * n + text.replace(IMAGE_PLACEHOLDER, "").strip()).strip()


def place_images(samples: list[Sample], mode: str) -> list[Sample]:
    if mode == "keep":
        return samples
    if mode != "front":
        raise ConfigError(f"data.image_placement={mode!r} is not one of keep, front")
    return [replace(s, turns=[Turn(t.role, front(t.text)) for t in s.turns]) for s in samples]

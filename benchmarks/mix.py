"""ScienceQA's length mix for the epoch benchmark: every test question's length in tokens with the real LLaVA-1.5
processor (576 per image), a quantile-spaced subset of it, and samples synthesized to exactly those lengths."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

FILLER = "the"  # one token per word for the Llama tokenizer


def load_mix(args, processor) -> list[tuple[int, bool]]:
    """(length in tokens, has image) per question: from --lengths, or tokenized from the shared test file."""
    if args.lengths:
        return [(int(n), bool(image)) for n, image in json.loads(Path(args.lengths).read_text())]
    from benchmarks.train import all_questions
    from lora_llava.data.collate import Collator
    from lora_llava.train.sampling import sample_lengths

    samples = all_questions(args.shared)
    lengths = sample_lengths(samples, Collator(processor))
    return [(n, bool(s.images)) for n, s in zip(lengths, samples)]


def pick(mix: list[tuple[int, bool]], n: int) -> list[tuple[int, bool]]:
    """`n` rows at evenly spaced quantiles of the lengths (the whole mix when n >= its size)."""
    order = sorted(range(len(mix)), key=lambda i: mix[i][0])
    if n >= len(mix):
        return [mix[i] for i in order]
    return [mix[order[int((k + 0.5) * len(mix) / n)]] for k in range(n)]


def describe_mix(rows: list[tuple[int, bool]]) -> str:
    lengths = sorted(n for n, _ in rows)
    images = sum(image for _, image in rows)
    return (f"{len(rows)} rows, {images / len(rows):.0%} with an image, mean {statistics.mean(lengths):.0f} tokens, "
            f"p95 {lengths[int(0.95 * (len(lengths) - 1))]}, longest {lengths[-1]}")


def image_files(shared: Path | None, scratch: Path) -> list[str]:
    if shared is not None:
        found = sorted(str(p) for p in (shared / "scienceqa" / "images" / "test").glob("*/image.png"))
        if found:
            return found
    from PIL import Image

    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / "stand-in.png"
    Image.new("RGB", (640, 480), (120, 90, 160)).save(path)
    return [str(path)]


def synthesize(rows, processor, images: list[str]):
    """Samples whose tokenized length is each row's length: filler words (one token each) and the answer "A"."""
    from lora_llava.data.collate import Collator, image_token_count
    from lora_llava.data.samples import IMAGE_PLACEHOLDER, Sample, Turn
    from lora_llava.train.sampling import sample_lengths

    def sample(k: int, image: bool, i: int) -> Sample:
        text = " ".join([FILLER] * k)
        prompt = f"{IMAGE_PLACEHOLDER}\n{text}" if image else text
        return Sample(f"row-{i}", [Turn("user", prompt), Turn("assistant", "A")],
                      [images[i % len(images)]] if image else [])

    tokens = image_token_count(processor)
    collator = Collator(processor)
    base, one = sample_lengths([sample(1, False, 0), sample(2, False, 0)], collator)
    step = max(one - base, 1)
    samples = [sample(max(1, 1 + (n - (tokens if image else 0) - base) // step), image, i)
               for i, (n, image) in enumerate(rows)]
    got = sample_lengths(samples, collator)
    error = max(abs(g - n) for g, (n, _) in zip(got, rows))
    return samples, error

"""The benchmarks' workload: ScienceQA-shaped samples, the processor, a random LLaVA, and the same data in the
form TRL's vision collator reads (prompt / completion / images), so both paths see identical inputs.

With ../shared/data present: the real LLaVA-1.5-7B processor (tokenizer, chat template, CLIP 336 px), and the real
ScienceQA test questions in LLaVA's format, half of them with their real images, half text-only. Without it: a
336 px processor around the tiny byte-level tokenizer and generated questions and PNGs of similar lengths.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from lora_llava.data.samples import IMAGE_PLACEHOLDER, Sample, Turn

DEFAULT_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# Vicuna-style layout ("USER: <image>\nQ ASSISTANT: A"), for the fallback processor, which has no chat template.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ m['role'].upper() + ': ' }}"
    "{% for c in m['content'] if c['type'] == 'image' %}{{ '<image>\n' }}{% endfor %}"
    "{% for c in m['content'] if c['type'] == 'text' %}{{ c['text'] + ' ' }}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def shared_dir(path: str | None) -> Path | None:
    folder = Path(path) if path else DEFAULT_SHARED
    return folder if (folder / "llava-1.5-7b-hf" / "tokenizer.json").is_file() else None


def load_processor(shared: Path | None):
    """The real LLaVA-1.5 processor, or a stand-in with the same image geometry (336 px, 576 tokens)."""
    from transformers import AutoProcessor, CLIPImageProcessor, LlavaProcessor

    if shared is not None:
        processor = AutoProcessor.from_pretrained(shared / "llava-1.5-7b-hf")
        processor.tokenizer.pad_token = processor.tokenizer.pad_token or processor.tokenizer.unk_token
        return processor
    from lora_llava.models.tiny import VICUNA, tiny_tokenizer

    image_processor = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    return LlavaProcessor(image_processor=image_processor, tokenizer=tiny_tokenizer(VICUNA), patch_size=14,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=FALLBACK_TEMPLATE)


def scienceqa_samples(shared: Path | None, n: int, seed: int, scratch: Path) -> list[Sample]:
    """`n` questions, alternating image / text-only, in the one internal sample form."""
    if shared is None:
        return generated_samples(n, seed, scratch)
    rows = json.loads((shared / "scienceqa" / "llava_test_CQM-A.json").read_text())
    images_dir = shared / "scienceqa" / "images" / "test"
    with_image = [r for r in rows if "image" in r and (images_dir / r["image"]).is_file()]
    text_only = [r for r in rows if "image" not in r]
    rng = random.Random(seed)
    picked = [x for pair in zip(rng.sample(with_image, n // 2), rng.sample(text_only, n - n // 2)) for x in pair]
    return [_from_llava_row(r, images_dir) for r in picked]


def _from_llava_row(row: dict, images_dir: Path) -> Sample:
    question, answer = row["conversations"][0]["value"], row["conversations"][1]["value"]
    images = [str(images_dir / row["image"])] if "image" in row else []
    if images and IMAGE_PLACEHOLDER not in question:
        question = f"{IMAGE_PLACEHOLDER}\n{question}"
    return Sample(str(row["id"]), [Turn("user", question), Turn("assistant", answer)], images)


def generated_samples(n: int, seed: int, scratch: Path) -> list[Sample]:
    """Stand-ins with ScienceQA's shape: questions of 20-250 words, a letter answer, half with a PNG."""
    from PIL import Image

    rng = random.Random(seed)
    scratch.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        words = " ".join(rng.choice(["which", "shape", "animal", "is", "the", "of", "these", "answer"])
                         for _ in range(rng.randint(20, 250)))
        question, images = f"{words}\nA. yes\nB. no", []
        if i % 2 == 0:
            path = scratch / f"{i}.png"
            Image.new("RGB", (rng.randint(200, 700), rng.randint(150, 500)), (rng.randrange(256), 90, 160)).save(path)
            question, images = f"{IMAGE_PLACEHOLDER}\n{question}", [str(path)]
        samples.append(Sample(f"gen-{i}", [Turn("user", question), Turn("assistant", rng.choice("AB"))], images))
    return samples


def trl_dataset(samples: list[Sample]):
    """The same samples as TRL's conversational prompt-completion rows, images decoded by `datasets` on access
    (what a TRL user's dataset does), so TRL trains on the answer only, like ours."""
    from datasets import Dataset, Image, List

    rows = {"prompt": [], "completion": [], "images": []}
    for s in samples:
        rows["prompt"].append([{"role": "user", "content": s.turns[0].text.replace(IMAGE_PLACEHOLDER, "").strip()}])
        rows["completion"].append([{"role": "assistant", "content": s.turns[1].text}])
        rows["images"].append(list(s.images))
    return Dataset.from_dict(rows).cast_column("images", List(Image()))


def random_llava(processor, seed: int, hidden: int = 128, layers: int = 2):
    """A random-init LLaVA with the processor's vocabulary and image geometry."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from benchmarks.shapes import small_llava_config

    tok = processor.tokenizer
    crop = processor.image_processor.crop_size["height"]
    config = small_llava_config(len(tok), tok.convert_tokens_to_ids(processor.image_token), tok.pad_token_id,
                                image_size=crop, patch_size=processor.patch_size, hidden=hidden, layers=layers)
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config)

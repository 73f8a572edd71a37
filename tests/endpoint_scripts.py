"""What the scripted server says in the endpoint tests: an instruction writer that answers generate's requests
from the annotations in the prompt (well-formed, and malformed for chosen images), a judge with scores a test
can compute by hand, and a folder of annotated images (coloured shapes drawn with data/synthetic.py)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from lora_llava.data.synthetic import COLORS, PLACES, SHAPES, draw
from tests.servers import reply

# Two images carry a note that makes the writer misbehave: no Question:/Answer: markers in the conversation,
# and a description that talks about bounding boxes. Both must end up in generated/rejects.jsonl.
NOTES = {7: "Note: reply without markers.", 8: "Note: mention the box."}


def annotated_images(folder: Path, n: int = 20) -> Path:
    """n images with captions (the second one makes every request distinct) and a pixel box each, and
    annotations.jsonl describing them."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        color, shape, place = list(COLORS)[i % 6], SHAPES[i % 3], PLACES[(i // 3) % 4]
        draw(shape, color, place, 32, random.Random(i)).save(folder / f"img{i:02d}.png")
        x0 = 16 if place.endswith("right") else 0
        y0 = 16 if place.startswith("bottom") else 0
        rows.append({"image": f"img{i:02d}.png", "captions": [f"A {color} {shape} in the {place}.", f"Picture {i}."],
                     "boxes": [{"label": shape, "box": [x0, y0, x0 + 15, y0 + 15]}], "text": NOTES.get(i, "")})
    with open(folder / "annotations.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return folder / "annotations.jsonl"


def kind_of(body: dict) -> str:
    system = body["messages"][0]["content"]
    return ("conversation" if "Write a conversation" in system else "detail" if "in detail" in system
            else "complex")


def last_text(body: dict) -> str:
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)


def writer(body: dict, number: int) -> dict:
    """An instruction writer: answers built from the caption "A <color> <shape> in the <place>."."""
    context = last_text(body)
    color, shape, place = re.match(r"A (\w+) (\w+) in the ([\w ]+)\.", context).groups()
    kind = kind_of(body)
    if kind == "conversation":
        if NOTES[7] in context:
            return reply(f"Sure! The shape is {color} and it sits in the {place}.")
        return reply(f"Question:\nWhat color is the shape?\nAnswer:\n{color}\nQuestion:\n"
                     f"Where is the shape?\nAnswer:\n{place}")
    if kind == "detail":
        if NOTES[8] in context:
            return reply(f"A {color} {shape} inside a bounding box in the {place}.")
        return reply(f"A {color} {shape} in the {place}.")
    return reply(f"Question:\nWhat shape is it?\nAnswer:\n{shape}")


def judge(body: dict, number: int) -> dict:
    """A judge: answer 1 (the reference) scores 8; answer 2 scores 8 when it equals the reference, else 4;
    a candidate saying "???" gets a judgment without scores."""
    text = last_text(body)
    reference = re.search(r"\[Answer 1\]\n(.*?)\n\n\[Answer 2\]", text, re.DOTALL).group(1)
    candidate = text.split("[Answer 2]\n", 1)[1]
    if candidate == "???":
        return reply("Both answers are hard to compare.")
    return reply(f"8 {8 if candidate == reference else 4}\nThe second answer is judged against the first.")

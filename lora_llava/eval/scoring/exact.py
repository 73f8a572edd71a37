"""The simplest scorer: the answer equals the reference after trimming, lower-casing and a final full stop."""

from __future__ import annotations

from lora_llava.data.samples import Sample
from lora_llava.eval.scoring.breakdown import summary


def normalize(text: str) -> str:
    return " ".join(text.strip().lower().rstrip(".").split())


def score(samples: list[Sample], outputs: list[str], prompts: list[str]) -> tuple[list[dict], dict]:
    rows = [{"id": s.id, "prompt": prompt, "output": output, "parsed": normalize(output), "gold": s.answer,
             "correct": normalize(output) == normalize(s.answer)}
            for s, output, prompt in zip(samples, outputs, prompts)]
    return rows, summary([row["correct"] for row in rows])

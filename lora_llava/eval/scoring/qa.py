"""Open-ended image-QA scoring for a team's own data: normalised exact match, choice accuracy where samples
carry `choices`, and a breakdown by any meta column (eval.metadata_fields does that for every scorer)."""

from __future__ import annotations

import re
import string

from lora_llava.data.samples import Sample
from lora_llava.eval.scoring.breakdown import summary
from lora_llava.eval.scoring.scienceqa import OPTIONS, parse_answer

ARTICLES = re.compile(r"\b(a|an|the)\b")
PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces: "The Red circle." -> "red circle"."""
    text = text.lower().translate(PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def choice_index(text: str, choices: list[str]) -> int | None:
    """Which choice `text` names: the choice itself (after normalisation) or its option letter ("B", "B. ...",
    "The answer is B.")."""
    wanted = normalize(text)
    for i, choice in enumerate(choices):
        if normalize(str(choice)) == wanted:
            return i
    letter = parse_answer(text.strip())
    if letter is not None and OPTIONS.index(letter) < len(choices):
        return OPTIONS.index(letter)
    return None


def gold_choice(sample: Sample) -> int | None:
    if "answer_index" in sample.meta:
        return int(sample.meta["answer_index"])
    return choice_index(sample.answer, sample.meta["choices"])


def score(samples: list[Sample], outputs: list[str], prompts: list[str]) -> tuple[list[dict], dict]:
    """Rows for predictions.jsonl (`correct` is the normalised exact match) and the metrics."""
    rows, choice_flags = [], []
    for sample, output, prompt in zip(samples, outputs, prompts):
        row = {"id": sample.id, "prompt": prompt, "output": output, "parsed": normalize(output),
               "gold": sample.answer, "correct": normalize(output) == normalize(sample.answer)}
        if sample.meta.get("choices"):
            picked, gold = choice_index(output, sample.meta["choices"]), gold_choice(sample)
            row["choice"] = picked
            row["choice_correct"] = picked is not None and picked == gold
            choice_flags.append(row["choice_correct"])
        rows.append(row)
    metrics = summary([row["correct"] for row in rows])
    metrics["exact_match"] = metrics["accuracy"]
    if choice_flags:
        choice = summary(choice_flags)
        metrics["choice_accuracy"], metrics["n_with_choices"] = choice["accuracy"], choice["n"]
    return rows, metrics

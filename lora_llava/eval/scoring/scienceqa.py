"""ScienceQA scoring as LLaVA's `llava/eval/eval_science_qa.py` and ScienceQA's `tools/evaluate_acc.py` do it.

Answer extraction follows LLaVA-1.5's evaluation exactly, so numbers are comparable with its table:
  1. the whole output is one option letter ("B");
  2. or it starts with a letter, a full stop and a space ("B. apostrophe");
  3. or "The answer is X." occurs exactly once (`The answer is ([A-Z]).`, which also reads ScienceQA's
     chain-of-thought form "The answer is B. BECAUSE: ...").
Anything else is wrong and counted as unparsed; so is a letter beyond the question's choices (wrong, not
unparsed). No stripping or case folding: LLaVA does none either.

Breakdown as ScienceQA's own scorer defines it: subject NAT/SOC/LAN; context TXT (a non-empty hint), IMG (an
image), NO (neither) - TXT and IMG overlap; grade G1-6 / G7-12. Subject and grade need problems.json metadata
(meta `subject`, `grade`), TXT and NO the `hint`; each covers only the questions that carry what it needs,
and metrics["known"] says how many those are.
"""

from __future__ import annotations

import re

from lora_llava.data.samples import Sample
from lora_llava.errors import DataError
from lora_llava.eval.scoring.breakdown import accuracy_by, summary

OPTIONS = ("A", "B", "C", "D", "E")
# Unescaped "." on purpose: LLaVA's pattern accepts any character after the letter.
THE_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")
SUBJECTS = {"natural science": "NAT", "social science": "SOC", "language science": "LAN"}
CONTEXTS = ("TXT", "IMG", "NO")
GRADES = ("G1-6", "G7-12")


def parse_answer(output: str) -> str | None:
    """The option letter an output names, or None where LLaVA's scorer says FAILED."""
    if output in OPTIONS:
        return output
    if len(output) >= 3 and output[0] in OPTIONS and output[1:3] == ". ":
        return output[0]
    found = THE_ANSWER_IS.findall(output)
    return found[0] if len(found) == 1 else None


def gold_index(sample: Sample) -> int:
    """The correct option's index: meta `answer_index`, else the letter in the answer turn."""
    if "answer_index" in sample.meta:
        return int(sample.meta["answer_index"])
    letter = sample.meta.get("answer_letter") or sample.answer.strip()
    if letter not in OPTIONS:
        raise DataError(f"sample {sample.id!r}: no meta answer_index and answer {sample.answer!r} is not a "
                         "letter A-E; the scienceqa scorer needs ScienceQA-style samples (eval.scorer=qa "
                         "scores free-form answers)")
    return OPTIONS.index(letter)


def is_correct(parsed: str | None, sample: Sample) -> bool:
    """LLaVA's get_pred_idx: a letter counts only within the question's own choices."""
    n_choices = len(sample.meta.get("choices") or OPTIONS)
    return parsed in OPTIONS[:n_choices] and OPTIONS.index(parsed) == gold_index(sample)


def context_groups(sample: Sample) -> list[str]:
    has_image = bool(sample.meta.get("has_image", bool(sample.images)))
    if "hint" not in sample.meta:  # text context unknown: neither TXT nor NO, rather than a guess
        return ["IMG"] if has_image else []
    groups = (["TXT"] if sample.meta["hint"] else []) + (["IMG"] if has_image else [])
    return groups or ["NO"]


def subject_groups(sample: Sample) -> list[str]:
    subject = SUBJECTS.get(sample.meta.get("subject", ""))
    return [subject] if subject else []


def grade_groups(sample: Sample) -> list[str]:
    grade = sample.meta.get("grade", "")
    number = grade[len("grade"):] if grade.startswith("grade") else ""
    if not number.isdigit():
        return []
    return ["G1-6"] if int(number) <= 6 else ["G7-12"]


def score(samples: list[Sample], outputs: list[str], prompts: list[str]) -> tuple[list[dict], dict]:
    """Rows for predictions.jsonl and the metrics of LLaVA's ScienceQA table."""
    rows = []
    for sample, output, prompt in zip(samples, outputs, prompts):
        parsed = parse_answer(output)
        rows.append({"id": sample.id, "prompt": prompt, "output": output, "parsed": parsed,
                     "gold": OPTIONS[gold_index(sample)], "correct": is_correct(parsed, sample)})
    flags = [row["correct"] for row in rows]
    metrics = summary(flags)
    metrics["unparsed"] = sum(row["parsed"] is None for row in rows)
    metrics["by_subject"] = accuracy_by(flags, map(subject_groups, samples), SUBJECTS.values())
    metrics["by_context"] = accuracy_by(flags, map(context_groups, samples), CONTEXTS)
    metrics["by_grade"] = accuracy_by(flags, map(grade_groups, samples), GRADES)
    # How many questions each breakdown could place: subject/grade need problems.json, TXT/NO the hint.
    metrics["known"] = {"subject": sum(bool(subject_groups(s)) for s in samples),
                        "grade": sum(bool(grade_groups(s)) for s in samples),
                        "hint": sum("hint" in s.meta for s in samples)}
    return rows, metrics

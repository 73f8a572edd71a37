"""The LLM judge, two ways.

`eval.scorer=judge` (LLaVA-Bench's relative score): for each question the judge sees the image's context
(the annotations a generated record carries, or the image itself with eval.judge.send_image=true), the
question, a reference answer (answer 1) and the model's answer (answer 2), and gives each a 1-10 score. The
relative score is the mean candidate score over the mean reference score x 100, overall and per
eval.judge.category_field; judgments whose first line is not two scores are counted as unparsed and left out
of the means. Prompts and raw judgments go to eval/predictions.jsonl.

ScienceQA arbitration (the paper's scheme, 92.53%): where our answer and another system's differ, the judge
reads the question with its choices and both answers and picks one.
"""

from __future__ import annotations

import re
from pathlib import Path
from statistics import fmean

from lora_llava.endpoint.client import Endpoint, RequestFailed
from lora_llava.endpoint.messages import as_text, read_text, user_message

NUMBER = r"(10|[1-9](?:\.\d+)?)"
SCORES = re.compile(rf"^\s*\**\s*{NUMBER}\s*[,/ ]\s*{NUMBER}\s*\**\s*$")
REFERENCE_SYSTEM = "You answer questions about a picture from its description, accurately and helpfully."


def parse_scores(text: str) -> tuple[float, float] | None:
    """(reference score, candidate score) from the judgment's first non-empty line, or None."""
    lines = [line for line in text.splitlines() if line.strip()]
    found = SCORES.match(lines[0]) if lines else None
    return (float(found.group(1)), float(found.group(2))) if found else None


def question_text(prompt: str) -> str:
    return prompt.replace("<image>", "").strip()


def context_of(sample) -> str:
    return str(sample.meta.get("context") or "(no description given: judge from the question and answers)")


def image_of(sample, image_root: str | None, judge_cfg) -> Path | None:
    if not judge_cfg.send_image or not sample.images or not isinstance(sample.images[0], str):
        return None
    return Path(image_root or ".") / sample.images[0]


def judge_messages(judge_cfg, context: str, question: str, answers: tuple[str, str], image=None) -> list[dict]:
    text = (f"[Description]\n{context}\n\n[Question]\n{question}\n\n[Answer 1]\n{answers[0]}\n\n"
            f"[Answer 2]\n{answers[1]}")
    return [{"role": "system", "content": read_text(judge_cfg.prompts_dir, "judge.txt", "eval.judge.prompts_dir")},
            user_message(text, image)]


def references(samples, prompts, endpoint: Endpoint, judge_cfg) -> list[str | RequestFailed]:
    """The reference answers: the data's own, or the endpoint's (asked once; the cache keeps them)."""
    if judge_cfg.reference == "data":
        return [s.answer for s in samples]
    jobs = [([{"role": "system", "content": REFERENCE_SYSTEM},
              user_message(f"{context_of(s)}\n\n{question_text(p)}")], judge_cfg.max_tokens)
            for s, p in zip(samples, prompts)]
    return [r if isinstance(r, RequestFailed) else r.text for r in endpoint.run_all(jobs, "judge: references")]


def relative(pairs: list[tuple[float, float]]) -> dict:
    if not pairs:
        return {"relative_score": None, "reference_mean": None, "candidate_mean": None, "judged": 0}
    ref, cand = fmean(p[0] for p in pairs), fmean(p[1] for p in pairs)
    return {"relative_score": 100 * cand / ref, "reference_mean": ref, "candidate_mean": cand,
            "judged": len(pairs)}


def summarize(rows: list[dict]) -> dict:
    judged = [row for row in rows if row["parsed"]]
    metrics = {**relative([tuple(r["parsed"]) for r in judged]), "n": len(rows), "unparsed": len(rows) - len(judged)}
    categories = dict.fromkeys(row["category"] for row in rows)
    metrics["by_category"] = {c: {**relative([tuple(r["parsed"]) for r in judged if r["category"] == c]),
                                  "n": sum(r["category"] == c for r in rows)} for c in categories}
    return metrics


def judge_scorer(endpoint_cfg, judge_cfg, eval_dir: Path, image_root: str | None):
    """A scorer for eval's registry: (samples, outputs, prompts) -> (rows, metrics)."""

    def score(samples, outputs, prompts):
        endpoint = Endpoint(endpoint_cfg, Path(endpoint_cfg.cache_dir or eval_dir) / "judge_cache.jsonl")
        refs = references(samples, prompts, endpoint, judge_cfg)
        jobs = [(judge_messages(judge_cfg, context_of(s), question_text(p), (str(ref), out),
                                image_of(s, image_root, judge_cfg)), judge_cfg.max_tokens)
                for s, p, ref, out in zip(samples, prompts, refs, outputs)]
        replies = endpoint.run_all(jobs, "judge")
        rows = []
        for s, p, ref, out, (messages, _), reply in zip(samples, prompts, refs, outputs, jobs, replies):
            failed = isinstance(reply, RequestFailed) or isinstance(ref, RequestFailed)
            raw = f"request failed: {reply if isinstance(reply, RequestFailed) else ref}" if failed else reply.text
            rows.append({"id": s.id, "prompt": p, "output": out, "gold": str(ref),
                         "parsed": None if failed else parse_scores(raw), "correct": None,
                         "category": str(s.meta.get(judge_cfg.category_field, "all")),
                         "judge_prompt": as_text(messages), "judgment": raw})
        metrics = summarize(rows)
        metrics["usage"] = endpoint.usage.as_dict()
        print(f"judge: {endpoint.usage.line()}")
        return rows, metrics

    return score


def arbitrate_messages(judge_cfg, question: str, answers: tuple[str, str]) -> list[dict]:
    text = f"[Question]\n{question}\n\n[System 1]\n{answers[0]}\n\n[System 2]\n{answers[1]}"
    return [{"role": "system", "content": read_text(judge_cfg.prompts_dir, "arbitrate.txt", "eval.judge.prompts_dir")},
            {"role": "user", "content": text}]


def parse_pick(text: str) -> int | None:
    """1 or 2 from the first non-empty line of an arbitration, or None."""
    lines = [line.strip().strip("*.") for line in text.splitlines() if line.strip()]
    return int(lines[0]) if lines and lines[0] in ("1", "2") else None


def arbitrate(samples, prompts, ours: list[str], theirs: list[str], parse, is_correct, endpoint: Endpoint,
              judge_cfg) -> tuple[list[dict], dict]:
    """Where the parsed answers differ, the judge picks one; where it cannot (unparsed judgment, failed request)
    ours stands and the question counts as unresolved. Returns (rows, counts)."""
    if not samples:
        raise ValueError("arbitration: no questions to arbitrate (check eval.split / eval.limit)")
    ask = [i for i, (a, b) in enumerate(zip(ours, theirs)) if parse(a) != parse(b)]
    jobs = [(arbitrate_messages(judge_cfg, question_text(prompts[i]), (ours[i], theirs[i])), judge_cfg.max_tokens)
            for i in ask]
    replies = dict(zip(ask, endpoint.run_all(jobs, "arbitrate")))
    rows, counts = [], {"ours_won": 0, "other_won": 0, "unresolved": 0}
    for i, sample in enumerate(samples):
        reply = replies.get(i)
        raw = None if reply is None else str(reply) if isinstance(reply, RequestFailed) else reply.text
        pick = parse_pick(raw) if reply is not None and not isinstance(reply, RequestFailed) else None
        if reply is not None:
            counts[{1: "ours_won", 2: "other_won", None: "unresolved"}[pick]] += 1
        final = theirs[i] if pick == 2 else ours[i]
        rows.append({"id": sample.id, "ours": ours[i], "other": theirs[i], "pick": pick, "judgment": raw,
                     "correct": is_correct(parse(final), sample)})
    n = len(samples)
    metrics = {"n": n, "disagreements": len(ask), **counts,
               "ours": sum(is_correct(parse(o), s) for o, s in zip(ours, samples)) / n,
               "other": sum(is_correct(parse(t), s) for t, s in zip(theirs, samples)) / n,
               "arbitrated": sum(r["correct"] for r in rows) / n}
    return rows, metrics

"""stages=[generate]: LLaVA instruction data written by an LLM from a team's annotations, in the paper's three
kinds: a multi-turn `conversation`, a `detail`ed description, and `complex` reasoning. One request per image
and kind: the kind's system prompt, its few-shot seeds, then the image's annotations as text (and the image
itself with generate.send_image=true).

Every response is parsed and screened like training data (structure, the image loads, the length fits
data.max_length, no talk of boxes or captions); what fails goes to generated/rejects.jsonl with the raw
response and the reason. The output is LLaVA conversation JSON, in annotation order whatever order the answers
came in, so a run resumed from the cache writes the same file as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from types import SimpleNamespace

from lora_llava.endpoint.annotations import Note, read_notes
from lora_llava.endpoint.client import Endpoint, RequestFailed, estimate_tokens
from lora_llava.endpoint.messages import as_text, read_seeds, read_text, user_message
from lora_llava.errors import DataError

MARKER = re.compile(r"^(Question|Answer):[ \t]*", re.MULTILINE)


class Unusable(ValueError):
    """A response that cannot become a training record; the message says why."""


def messages_for(note: Note, kind: str, gen_cfg) -> list[dict]:
    key = "generate.prompts_dir"
    messages = [{"role": "system", "content": read_text(gen_cfg.prompts_dir, f"{kind}.txt", key)}]
    for seed in read_seeds(gen_cfg.prompts_dir, kind, key):
        messages += [{"role": "user", "content": seed["context"]},
                     {"role": "assistant", "content": seed["response"]}]
    image = Path(gen_cfg.image_root or ".") / note.image if gen_cfg.send_image else None
    if image is not None and not image.is_file():
        raise DataError(f"image {note.image!r} of {note.id!r} not found under generate.image_root="
                        f"{gen_cfg.image_root} (generate.send_image=true sends it)")
    return messages + [user_message(note.context(), image)]


def question_answer_pairs(text: str) -> list[tuple[str, str]]:
    """"Question:" / "Answer:" blocks, strictly alternating, starting with a question."""
    pieces = MARKER.split(text.strip())
    if pieces[0].strip():
        raise Unusable(f"text before the first Question: ({pieces[0].strip()[:60]!r})")
    labels, bodies = pieces[1::2], [b.strip() for b in pieces[2::2]]
    if not labels or labels[::2] != ["Question"] * len(labels[::2]) or labels[1::2] != ["Answer"] * len(labels[1::2]):
        raise Unusable("expected Question: / Answer: blocks, alternating")
    if len(labels) % 2:
        raise Unusable("the last question has no answer")
    if not all(bodies):
        raise Unusable("an empty question or answer")
    return list(zip(bodies[::2], bodies[1::2]))


def detail_question(note: Note, gen_cfg) -> str:
    """One of the description instructions, chosen by the image id (the same on every run)."""
    questions = read_text(gen_cfg.prompts_dir, "detail_questions.txt", "generate.prompts_dir").splitlines()
    questions = [q.strip() for q in questions if q.strip()]
    return questions[int(hashlib.sha256(note.id.encode()).hexdigest(), 16) % len(questions)]


def parse(kind: str, text: str, note: Note, gen_cfg) -> list[tuple[str, str]]:
    if kind == "detail":
        if not text.strip() or MARKER.search(text):
            raise Unusable("a description must be plain prose (empty, or written as Question:/Answer:)")
        pairs = [(detail_question(note, gen_cfg), text.strip())]
    else:
        pairs = question_answer_pairs(text)
        if kind == "complex" and len(pairs) != 1:
            raise Unusable(f"complex reasoning is one question and its answer, got {len(pairs)}")
    said = " ".join(a for _, a in pairs).lower()
    for phrase in gen_cfg.forbidden:
        if phrase.lower() in said:
            raise Unusable(f"an answer mentions {phrase!r}, which the picture does not show (generate.forbidden)")
    return pairs


def to_record(note: Note, kind: str, pairs: list[tuple[str, str]]) -> dict:
    turns = []
    for i, (question, answer) in enumerate(pairs):
        turns += [{"from": "human", "value": f"<image>\n{question}" if i == 0 else question},
                  {"from": "gpt", "value": answer}]
    return {"id": f"{note.id}-{kind}", "image": note.image, "conversations": turns, "kind": kind,
            "context": note.context()}


def screen_records(records: list[dict], cfg, processor) -> list[tuple[dict, str]]:
    """(record, reason) for each record that training would reject (image, structure, length)."""
    from lora_llava.data.llava_json import record_to_sample
    from lora_llava.data.screen import screen

    data_cfg = SimpleNamespace(max_length=cfg.data.max_length, system_prompt=cfg.data.system_prompt,
                               image_root=cfg.generate.image_root)
    samples = [record_to_sample(r, r["id"]) for r in records]
    screened = screen(samples, data_cfg, processor, "generated")
    by_id = {r["id"]: r for r in records}
    return [(by_id[s.id], err.reason) for s, err in screened.rejected]


def plan(cfg) -> tuple[list[Note], list[tuple[Note, str, list[dict]]]]:
    notes = read_notes(cfg.generate)
    return notes, [(n, kind, messages_for(n, kind, cfg.generate)) for n in notes for kind in cfg.generate.kinds]


def dry_run(cfg, jobs) -> dict:
    """Print the first prompts, the number of requests and a token estimate; send nothing."""
    tokens_in = sum(estimate_tokens(json.dumps(m)) for _, _, m in jobs)
    tokens_out = len(jobs) * cfg.generate.max_tokens
    for note, kind, messages in jobs[: len(cfg.generate.kinds)]:
        print(f"--- request {note.id}-{kind} ---\n{as_text(messages)}\n")
    cost = (tokens_in * (cfg.endpoint.price_per_1k_input or 0) + tokens_out * (cfg.endpoint.price_per_1k_output or 0)) / 1000
    print(f"dry run: {len(jobs)} requests to {cfg.endpoint.model}; about {tokens_in} input tokens and at most "
          f"{tokens_out} output tokens (generate.max_tokens each); cost at most {cost:.4f}. Nothing was sent.")
    return {"requests": len(jobs), "input_tokens_estimate": tokens_in, "output_tokens_max": tokens_out}


def output_path(cfg, run_dir: Path) -> Path:
    return Path(cfg.generate.output) if cfg.generate.output else run_dir / "generated" / "llava.json"


def write_outputs(out: Path, gen_dir: Path, records: list[dict], rejects: list[dict], usage: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    gen_dir.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    with open(gen_dir / "rejects.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects)
    (gen_dir / "usage.json").write_text(json.dumps(usage, indent=2) + "\n")


def collect(jobs, replies, cfg) -> tuple[list[dict], list[dict]]:
    records, rejects = [], []
    for (note, kind, _), reply in zip(jobs, replies):
        row = {"id": f"{note.id}-{kind}", "image": note.image, "kind": kind}
        if isinstance(reply, RequestFailed):
            rejects.append({**row, "reason": f"request failed: {reply}", "raw": None})
            continue
        try:
            records.append(to_record(note, kind, parse(kind, reply.text, note, cfg.generate)))
        except Unusable as err:
            rejects.append({**row, "reason": str(err), "raw": reply.text})
    return records, rejects


def generate_stage(cfg, ctx) -> None:
    from lora_llava.models.load import load_processor

    notes, jobs = plan(cfg)
    if cfg.generate.dry_run:
        ctx.extra["generate"] = dry_run(cfg, jobs)
        return
    processor = ctx.processor or load_processor(cfg.model)  # before any request: it screens the records
    gen_dir = ctx.run_dir / "generated"
    endpoint = Endpoint(cfg.endpoint, Path(cfg.endpoint.cache_dir or gen_dir) / "cache.jsonl")
    replies = endpoint.run_all([(m, cfg.generate.max_tokens) for _, _, m in jobs], "generate")
    records, rejects = collect(jobs, replies, cfg)
    bad = {r["id"]: reason for r, reason in screen_records(records, cfg, processor)}
    rejects += [{"id": r["id"], "image": r["image"], "kind": r["kind"], "reason": bad[r["id"]],
                 "raw": r["conversations"]} for r in records if r["id"] in bad]
    records = [r for r in records if r["id"] not in bad]
    out = output_path(cfg, ctx.run_dir)
    write_outputs(out, gen_dir, records, rejects, endpoint.usage.as_dict())
    ctx.extra["generate"] = {"records": len(records), "rejected": len(rejects), **endpoint.usage.as_dict()}
    print(f"generate: {len(records)} records from {len(notes)} images -> {out}; {len(rejects)} rejected "
          f"(each with its reason in {gen_dir / 'rejects.jsonl'}). {endpoint.usage.line()}")
    if not records:
        raise DataError(f"generate: every one of the {len(jobs)} responses was rejected; see "
                        f"{gen_dir / 'rejects.jsonl'}")

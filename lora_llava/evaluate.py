"""The eval stage: batched greedy generation on a split, scoring, and the files of PRODUCT.md's eval/."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from tqdm.auto import tqdm

from lora_llava.data.collate import Collator
from lora_llava.data.samples import Sample, Turn

log = logging.getLogger("lora_llava")


def with_suffix(sample: Sample, suffix: str | None) -> Sample:
    """The sample with `suffix` appended to its last user turn (LLaVA's answer-format instruction)."""
    if not suffix:
        return sample
    turns = list(sample.prompt_turns())
    turns[-1] = Turn(turns[-1].role, f"{turns[-1].text}\n{suffix}")
    return Sample(sample.id, turns + sample.turns[len(turns):], sample.images, sample.meta)


@torch.no_grad()
def generate(model, processor, samples: list[Sample], batch_size: int = 8, max_new_tokens: int = 16,
             system_prompt: str | None = None, image_root=None, desc: str = "generating") -> list[str]:
    """Greedy answers, left-padded batches; identical to batch size 1."""
    collator = Collator(processor, system_prompt=system_prompt, image_root=image_root, generation=True)
    tokenizer = processor.tokenizer
    device = next(model.parameters()).device
    model.eval()
    outputs = []
    for start in tqdm(range(0, len(samples), batch_size), desc=desc, unit="batch", leave=False):
        batch = collator(samples[start : start + batch_size])
        batch = {k: v.to(device) for k, v in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
        out = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        new = out[:, batch["input_ids"].shape[1]:]
        outputs += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return outputs


def normalize(text: str) -> str:
    return " ".join(text.strip().lower().rstrip(".").split())


def score_exact(samples: list[Sample], outputs: list[str]) -> tuple[list[dict], dict]:
    rows = []
    for sample, output in zip(samples, outputs):
        rows.append({"id": sample.id, "prompt": sample.prompt_turns()[-1].text, "output": output,
                     "parsed": normalize(output), "gold": sample.answer,
                     "correct": normalize(output) == normalize(sample.answer)})
    n = len(rows)
    metrics = {"accuracy": sum(r["correct"] for r in rows) / n if n else 0.0, "n": n}
    return rows, metrics


def write_results(eval_dir: Path, rows: list[dict], metrics: dict) -> None:
    eval_dir.mkdir(parents=True, exist_ok=True)
    with open(eval_dir / "predictions.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (eval_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    lines = ["# Evaluation", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    (eval_dir / "report.md").write_text("\n".join(lines) + "\n")


def evaluate(cfg, model, processor, samples: list[Sample]) -> tuple[list[dict], dict]:
    if cfg.eval.limit:
        samples = samples[: cfg.eval.limit]
    prompts = [with_suffix(s, cfg.eval.answer_suffix) for s in samples]
    outputs = generate(model, processor, prompts, cfg.eval.batch_size, cfg.eval.max_new_tokens,
                       cfg.data.system_prompt, cfg.data.image_root)
    return score_exact(samples, outputs)


def eval_stage(cfg, ctx) -> None:
    from lora_llava.data import load_splits
    from lora_llava.export import load_adapted

    if ctx.model is None:
        ctx.model, ctx.processor = load_adapted(cfg, cfg.adapter)
    samples = load_splits(cfg.data)[cfg.eval.split]
    rows, metrics = evaluate(cfg, ctx.model, ctx.processor, samples)
    write_results(ctx.run_dir / "eval", rows, metrics)
    ctx.metrics = metrics
    log.info("eval on %s (%d samples): accuracy %.4f", cfg.eval.split, metrics["n"], metrics["accuracy"])
    print(f"held-out accuracy: {metrics['accuracy']:.4f} on {metrics['n']} {cfg.eval.split} samples")

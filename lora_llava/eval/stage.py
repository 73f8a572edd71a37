"""The eval stage: greedy answers for a split (or an existing predictions file), scored by `eval.scorer`,
written as PRODUCT.md's eval/ folder (predictions.jsonl, metrics.json, report.md + report.png)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lora_llava.data.samples import Sample, with_suffix
from lora_llava.errors import DataError, MissingPathError
from lora_llava.eval.generate import generate
from lora_llava.eval.scoring import build_scorer, score
from lora_llava.eval.scoring.report import write_results

log = logging.getLogger("lora_llava")


def read_predictions(path: str | Path, samples: list[Sample]) -> tuple[list[str], int]:
    """Outputs for `samples` from a JSONL answers file as LLaVA's model_vqa_science.py writes it
    (`question_id`, `text`). A question without an answer gets "" (wrong, as in LLaVA's scorer); returns
    (outputs, number of such questions)."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"eval.predictions={path}: no such file")
    answers = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                answers[str(row["question_id"])] = row["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise DataError(f"{path}, line {number}: expected a JSON object with question_id and text "
                                 f"({err})") from None
    ids = [s.id for s in samples]
    missing = [i for i in ids if i not in answers]
    unknown = set(answers) - set(ids)
    if len(missing) == len(ids) and ids:
        raise DataError(f"{path}: none of its {len(answers)} question_ids is a question of this split "
                         f"(first ids: {ids[:3]} vs {list(answers)[:3]}); check eval.split and data.*")
    if missing:
        log.warning("%s: %d of %d questions have no prediction and count as wrong (e.g. %s)",
                    path, len(missing), len(ids), ", ".join(missing[:5]))
    if unknown:
        log.warning("%s: %d predictions are for questions outside this split/limit, not scored (e.g. %s)",
                    path, len(unknown), ", ".join(sorted(unknown)[:5]))
    return [answers.get(i, "") for i in ids], len(missing)


def eval_samples(cfg, loaded: dict | None = None) -> list[Sample]:
    """The eval.split questions (cut to eval.limit); `loaded`: the run's splits when already loaded."""
    from lora_llava.data import load_splits, require_split

    samples = require_split(loaded if loaded is not None else load_splits(cfg.data), cfg.eval.split, "eval.split")
    return samples[: cfg.eval.limit] if cfg.eval.limit else samples


def scorer_for(cfg, eval_dir: Path):
    return build_scorer(cfg.eval, cfg.endpoint, eval_dir, cfg.data.image_root)


def evaluate(cfg, model, processor, samples: list[Sample], eval_dir: Path | None = None):
    """Generate answers for `samples` and score them: (rows, metrics, outputs, prompts)."""
    prompts = [with_suffix(s, cfg.eval.answer_suffix) for s in samples]
    outputs = generate(model, processor, prompts, cfg.eval.batch_size, cfg.eval.max_new_tokens,
                       cfg.data.system_prompt, cfg.data.image_root)
    texts = [p.prompt_turns()[-1].text for p in prompts]
    rows, metrics = score(scorer_for(cfg, eval_dir or Path("eval")), samples, outputs, texts,
                          cfg.eval.metadata_fields)
    return rows, metrics, outputs, texts


def score_file(cfg, samples: list[Sample], eval_dir: Path | None = None):
    """Score an existing predictions file; no model is loaded. (rows, metrics, outputs, prompts)."""
    outputs, missing = read_predictions(cfg.eval.predictions, samples)
    prompts = [with_suffix(s, cfg.eval.answer_suffix).prompt_turns()[-1].text for s in samples]
    rows, metrics = score(scorer_for(cfg, eval_dir or Path("eval")), samples, outputs, prompts,
                          cfg.eval.metadata_fields)
    metrics["missing"] = missing
    return rows, metrics, outputs, prompts


def arbitration(cfg, samples, prompts, outputs, eval_dir: Path) -> dict:
    """ScienceQA with another system's answers: where they differ from ours the judge picks (endpoint/judge.py)."""
    import json

    from lora_llava.endpoint.client import Endpoint
    from lora_llava.endpoint.judge import arbitrate
    from lora_llava.eval.scoring.scienceqa import is_correct, parse_answer

    if cfg.eval.scorer != "scienceqa":
        raise ValueError(f"eval.judge.arbitrate_with works with eval.scorer=scienceqa, not {cfg.eval.scorer}")
    theirs, _ = read_predictions(cfg.eval.judge.arbitrate_with, samples)
    endpoint = Endpoint(cfg.endpoint, Path(cfg.endpoint.cache_dir or eval_dir) / "judge_cache.jsonl")
    rows, metrics = arbitrate(samples, prompts, outputs, theirs, parse_answer, is_correct, endpoint, cfg.eval.judge)
    eval_dir.mkdir(parents=True, exist_ok=True)
    with open(eval_dir / "arbitration.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    print(f"arbitration with {cfg.eval.judge.arbitrate_with}: ours {metrics['ours']:.4f}, other "
          f"{metrics['other']:.4f}, arbitrated {metrics['arbitrated']:.4f}; {metrics['disagreements']} "
          f"disagreements: ours won {metrics['ours_won']}, other won {metrics['other_won']}, "
          f"unresolved {metrics['unresolved']} (kept ours)")
    return {**metrics, "usage": endpoint.usage.as_dict()}


def eval_stage(cfg, ctx) -> None:
    from lora_llava.data.screen import screen_split
    from lora_llava.models.load import load_adapted, load_processor

    samples = eval_samples(cfg, ctx.splits(cfg.data))
    eval_dir = ctx.run_dir / "eval"
    if cfg.eval.predictions:
        log.info("scoring %s against %d %s questions (no model)", cfg.eval.predictions, len(samples),
                 cfg.eval.split)
        rows, metrics, outputs, prompts = score_file(cfg, samples, eval_dir)
    else:
        # Screened with the processor alone, so bad or no usable questions stop before weights load.
        processor = ctx.processor or load_processor(cfg.model)
        samples = screen_split(samples, cfg.data, processor, ctx.run_dir, cfg.eval.split, generation=True)
        if ctx.model is None:  # no model in memory: adapter=, or the one this run's train stage saved
            ctx.model, ctx.processor = load_adapted(cfg, cfg.adapter or (str(ctx.adapter_dir) if ctx.adapter_dir else None))
        rows, metrics, outputs, prompts = evaluate(cfg, ctx.model, ctx.processor, samples, eval_dir)
    if cfg.eval.judge.arbitrate_with:
        metrics["arbitration"] = arbitration(cfg, samples, prompts, outputs, eval_dir)
    title = f"{cfg.recipe_name}: {cfg.eval.split} split, {cfg.eval.scorer} scorer"
    write_results(eval_dir, rows, metrics, title)
    ctx.metrics = metrics
    print(headline_line(metrics, cfg.eval.split) + f" (report: {eval_dir / 'report.md'})")


def headline_line(metrics: dict, split: str) -> str:
    if "relative_score" in metrics:
        value = metrics["relative_score"]
        shown = "none (no judgment parsed)" if value is None else f"{value:.1f}"
        return (f"judge relative score: {shown} on {metrics['n']} {split} samples "
                f"({metrics['unparsed']} judgments unparsed)")
    log.info("eval on %s (%d samples): accuracy %.4f", split, metrics["n"], metrics["accuracy"])
    return f"held-out accuracy: {metrics['accuracy']:.4f} on {metrics['n']} {split} samples"

"""The compare stage: is the adapter better than the base model on the task, and did it forget anything?

The same questions are answered twice in one process: by the adapted model, and by the base with its adapters
disabled (`PeftModel.disable_adapter()`, which also routes around the trained projector copy peft keeps in
modules_to_save, so "base" really is the base). The task questions are eval.split; `compare.general.*` (any
data source) adds a general slice to show forgetting. Writes eval/compare.md and eval/compare.json; export puts
the table into the model card.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import OmegaConf

from lora_llava.data.screen import screen_split
from lora_llava.eval.answers import answer_and_score, split_samples
from lora_llava.eval.scoring.comparison import render_comparison
from lora_llava.eval.scoring.report import percent

log = logging.getLogger("lora_llava")


def base_and_adapted(model, processor, samples, eval_cfg, data_cfg, scorer: str, name: str) -> dict:
    """{"base": metrics, "adapted": metrics} of `model` with and without its adapters, on `samples`."""
    _, adapted = answer_and_score(model, processor, samples, eval_cfg, data_cfg, scorer, f"{name}: adapted")
    with model.disable_adapter():
        _, base = answer_and_score(model, processor, samples, eval_cfg, data_cfg, scorer, f"{name}: base")
    return {"base": base, "adapted": adapted}


def general_sets(cfg) -> list[tuple]:
    """(name, title, data cfg, split, limit, scorer, eval cfg) of the general slice, when one is configured."""
    if cfg.compare.general.source == "none":
        return []
    general = cfg.compare.general
    # A general slice is asked plainly: the task's answer instruction (eval.answer_suffix) would not fit it.
    plain = OmegaConf.merge(cfg.eval, {"answer_suffix": None, "metadata_fields": []})
    title = (f"General slice: {general.source} {general.path or ''} ({cfg.compare.general_split} split, "
             f"{cfg.compare.general_scorer} scorer)")
    return [("general", title, general, cfg.compare.general_split, cfg.compare.general_limit,
             cfg.compare.general_scorer, plain)]


def question_sets(cfg) -> list[tuple]:
    task_title = f"Task: {cfg.data.source} {cfg.eval.split} split ({cfg.eval.scorer} scorer)"
    task = ("task", task_title, cfg.data, cfg.eval.split, cfg.compare.limit or cfg.eval.limit, cfg.eval.scorer,
            cfg.eval)
    return [task, *general_sets(cfg)]


def compare(cfg, model, processor, run_dir: Path) -> dict[str, dict]:
    results = {}
    for name, title, data_cfg, split, limit, scorer, eval_cfg in question_sets(cfg):
        samples = split_samples(data_cfg, split, limit)
        samples = screen_split(samples, data_cfg, processor, run_dir, split, generation=True)
        results[name] = {"title": title, "n": len(samples),
                         **base_and_adapted(model, processor, samples, eval_cfg, data_cfg, scorer, name)}
        log.info("compare %s: base %.4f, adapted %.4f on %d questions", name,
                 results[name]["base"]["accuracy"], results[name]["adapted"]["accuracy"], len(samples))
    return results


def compare_stage(cfg, ctx) -> None:
    from lora_llava.models.load import load_adapted

    if ctx.model is None:
        if cfg.adapter is None:
            raise ValueError("stages=[compare] needs an adapter: run it after train, or pass adapter=PATH")
        ctx.model, ctx.processor = load_adapted(cfg, cfg.adapter)
    if not hasattr(ctx.model, "disable_adapter"):
        raise ValueError("stages=[compare] compares a model with and without its adapter: give adapter=PATH "
                         "(a merged model has no adapter to disable)")
    results = compare(cfg, ctx.model, ctx.processor, ctx.run_dir)
    out = ctx.run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "compare.md").write_text(render_comparison(results))
    ctx.extra["compare"] = results
    task = results["task"]
    print(f"base vs adapted on {task['n']} {cfg.eval.split} questions: {percent(task['base']['accuracy'])}% -> "
          f"{percent(task['adapted']['accuracy'])}% (table: {out / 'compare.md'})")

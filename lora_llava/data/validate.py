"""The validate stage: check a dataset with the processor alone (no model weights) and report on it.

Per split: samples, with an image / text-only, images per sample, token lengths (images expanded to the
processor's image tokens), image sizes, and the rejected samples grouped by reason. Every sample is screened
(data/screen.py) whatever data.on_error says, so one run lists every problem; the report then says what a
training run with the current data.on_error would do. Printed, and written to the run directory as
data_report.md, data_report.json and data_rejected.jsonl (one line per bad sample; rejected.jsonl is kept for
what a run actually leaves out, so a validate stage before train does not list samples twice).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from lora_llava.data.lengths import spread
from lora_llava.data.screen import Screened, reason_kind, screen, write_rejected
from lora_llava.errors import DataError

REJECTS_FILE = "data_rejected.jsonl"

log = logging.getLogger("lora_llava")


def summarize(screened: Screened) -> dict:
    samples = screened.kept + [s for s, _ in screened.rejected]
    with_image = sum(bool(s.images) for s in samples)
    groups: dict[str, list[str]] = {}
    for sample, err in screened.rejected:
        groups.setdefault(reason_kind(err.reason), []).append(sample.id)
    return {
        "samples": len(samples), "with_image": with_image, "text_only": len(samples) - with_image,
        "images_per_sample": dict(sorted(Counter(len(s.images) for s in samples).items())),
        "kept": len(screened.kept), "rejected": len(screened.rejected),
        "tokens": spread(screened.n_tokens),
        "image_width": spread([w for w, _ in screened.image_sizes]),
        "image_height": spread([h for _, h in screened.image_sizes]),
        "rejected_by_reason": {k: {"count": len(ids), "examples": ids[:3]}
                               for k, ids in sorted(groups.items(), key=lambda kv: -len(kv[1]))},
    }


def would_stop(summary: dict, data_cfg) -> bool:
    """Whether a run using this split would stop on it under the current data.on_error."""
    bad, total = summary["rejected"], summary["samples"]
    if not total:
        return True
    return bool(bad) and (data_cfg.on_error == "raise" or bad / total > data_cfg.max_skip_fraction)


def verdict(split: str, summary: dict, data_cfg) -> str:
    """What a training run would do with this split under the current data.on_error."""
    bad, total = summary["rejected"], summary["samples"]
    if not total:
        return f"{split}: no samples; a run using this split would stop"
    if not bad:
        return f"{split}: all {total} samples usable"
    if data_cfg.on_error == "raise":
        return f"{split}: data.on_error=raise would stop at the first of {bad} bad samples"
    share = bad / total
    if share > data_cfg.max_skip_fraction:
        return (f"{split}: data.on_error=skip would stop: {bad} of {total} rejected ({share:.1%}) exceeds "
                f"data.max_skip_fraction={data_cfg.max_skip_fraction}")
    return f"{split}: data.on_error=skip would leave out {bad} of {total} ({share:.1%})"


def _fmt(spread: dict) -> str:
    return "/".join(str(spread[k]) for k in ("min", "median", "p95", "max")) if spread else "-"


def render_markdown(report: dict) -> str:
    lines = [f"# Data report: {report['source']} {report['path'] or ''}".rstrip(), "",
             f"processor: {report['processor']}; data.max_length={report['max_length']}", "",
             ("| split | samples | with image | text-only | rejected | tokens min/median/p95/max | "
              "image width min/median/p95/max | image height min/median/p95/max |"),
             "|---|---|---|---|---|---|---|---|"]
    for name, s in report["splits"].items():
        lines.append(f"| {name} | {s['samples']} | {s['with_image']} | {s['text_only']} | {s['rejected']} | "
                     f"{_fmt(s['tokens'])} | {_fmt(s['image_width'])} | {_fmt(s['image_height'])} |")
    rejects = [(name, kind, g) for name, s in report["splits"].items() for kind, g in s["rejected_by_reason"].items()]
    if rejects:
        lines += ["", "| split | rejected | reason | e.g. |", "|---|---|---|---|"]
        lines += [f"| {name} | {g['count']} | {kind} | {', '.join(g['examples'])} |" for name, kind, g in rejects]
    lines += ["", *[f"- {v}" for v in report["verdicts"]]]
    return "\n".join(lines) + "\n"


def validate(cfg, run_dir: Path, processor) -> dict:
    """Screen every split of cfg.data with `processor`; write and return the report."""
    from lora_llava.data import load_splits

    run_dir = Path(run_dir)
    (run_dir / REJECTS_FILE).unlink(missing_ok=True)
    report = {"source": cfg.data.source, "path": cfg.data.path, "processor": cfg.model.path,
              "max_length": cfg.data.max_length, "splits": {}, "verdicts": []}
    for name, samples in load_splits(cfg.data).items():
        screened = screen(samples, cfg.data, processor, name)
        if screened.rejected:
            write_rejected(run_dir, screened, REJECTS_FILE)
        report["splits"][name] = summary = summarize(screened)
        report["verdicts"].append(verdict(name, summary, cfg.data))
    (run_dir / "data_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (run_dir / "data_report.md").write_text(render_markdown(report))
    return report


def validate_stage(cfg, ctx) -> None:
    from lora_llava.models.load import load_processor

    processor = ctx.processor or load_processor(cfg.model)
    report = validate(cfg, ctx.run_dir, processor)
    ctx.extra["data_report"] = report
    print(render_markdown(report))
    print(f"written: {ctx.run_dir / 'data_report.md'}, data_report.json"
          + (f", {REJECTS_FILE}" if any(s["rejected"] for s in report["splits"].values()) else ""))
    stops = [v for v, s in zip(report["verdicts"], report["splits"].values()) if would_stop(s, cfg.data)]
    if stops:
        raise DataError(f"validate: a run would stop on this data: {'; '.join(stops)} (details in "
                        f"{ctx.run_dir / 'data_report.md'})")

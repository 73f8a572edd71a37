"""The files of PRODUCT.md's eval/: predictions.jsonl, metrics.json, and for people report.md + report.png."""

from __future__ import annotations

import json
from pathlib import Path

# LLaVA's ScienceQA table, in the paper's column order.
PAPER_COLUMNS = (("by_subject", ("NAT", "SOC", "LAN")), ("by_context", ("TXT", "IMG", "NO")),
                 ("by_grade", ("G1-6", "G7-12")))


def write_results(eval_dir: Path, rows: list[dict], metrics: dict, title: str = "Evaluation") -> None:
    eval_dir = Path(eval_dir)
    eval_dir.mkdir(parents=True, exist_ok=True)
    with open(eval_dir / "predictions.jsonl", "w") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    (eval_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if "relative_score" in metrics:  # the LLM judge: a relative score, not an accuracy
        write_chart(eval_dir / "report.png", judge_bars(metrics), title, "relative score %")
        (eval_dir / "report.md").write_text(render_judge(metrics, title, "report.png"))
        return
    write_chart(eval_dir / "report.png", accuracy_bars(metrics), title, "accuracy %")
    (eval_dir / "report.md").write_text(render_markdown(metrics, title, "report.png"))


def breakdowns(metrics: dict) -> list[tuple[str, dict]]:
    """(family, {group: summary}) for every `by_*` entry; `by_field` holds one family per meta column."""
    out = []
    for key, value in metrics.items():
        if key == "by_field":
            out += [(field, groups) for field, groups in value.items()]
        elif key.startswith("by_") and isinstance(value, dict):
            out.append((key[3:], value))
    return out


def percent(value: float) -> str:
    return f"{100 * value:.2f}"


def headline(metrics: dict) -> str:
    text = f"**Accuracy {percent(metrics['accuracy'])}%**: {metrics['correct']} of {metrics['n']} correct"
    if metrics.get("unparsed"):
        text += f"; {metrics['unparsed']} outputs named no answer (counted wrong)"
    if metrics.get("missing"):
        text += f"; {metrics['missing']} questions had no prediction in the file (counted wrong"
        text += ", and among the unparsed)" if "unparsed" in metrics else ")"
    return text + "."


def paper_table(metrics: dict) -> list[str]:
    """One row in the column order of LLaVA's ScienceQA table (% accuracy; "-" where metadata is unknown)."""
    names = [name for _, group in PAPER_COLUMNS for name in group]
    cells = [percent(metrics[key][name]["accuracy"]) if name in metrics[key] else "-"
             for key, group in PAPER_COLUMNS for name in group]
    return ["| " + " | ".join([*names, "Avg"]) + " |", "|" + "---:|" * (len(names) + 1),
            "| " + " | ".join([*cells, percent(metrics["accuracy"])]) + " |", ""]


def render_markdown(metrics: dict, title: str, chart: str | None = None) -> str:
    lines = [f"# {title}", "", headline(metrics), ""]
    partial = {k: v for k, v in metrics.get("known", {}).items() if v < metrics["n"]}
    if partial:
        lines += ["Metadata known for: " + ", ".join(f"{k} {v} of {metrics['n']}" for k, v in partial.items())
                  + " questions; each breakdown covers only those.", ""]
    if all(key in metrics for key, _ in PAPER_COLUMNS):
        lines += paper_table(metrics)
    lines += ["| group | accuracy % | correct | n |", "|---|---:|---:|---:|",
              f"| **overall** | **{percent(metrics['accuracy'])}** | {metrics['correct']} | {metrics['n']} |"]
    for family, groups in breakdowns(metrics):
        lines += [f"| {family}: {name} | {percent(s['accuracy'])} | {s['correct']} | {s['n']} |"
                  for name, s in groups.items()]
    others = {k: v for k, v in metrics.items()
              if k not in ("accuracy", "correct", "n") and not isinstance(v, dict)}
    if others:
        lines += ["", "| other | value |", "|---|---:|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
                  for k, v in others.items()]
    lines += arbitration_lines(metrics.get("arbitration"))
    if chart:
        lines += ["", f"![accuracy by group]({chart})"]
    return "\n".join(lines) + "\n"


def arbitration_lines(arb: dict | None) -> list[str]:
    if not arb:
        return []
    header = "| ours % | other % | arbitrated % | disagreements | ours won | other won | unresolved (ours kept) |"
    row = (f"| {percent(arb['ours'])} | {percent(arb['other'])} | {percent(arb['arbitrated'])} | "
           f"{arb['disagreements']} | {arb['ours_won']} | {arb['other_won']} | {arb['unresolved']} |")
    return ["", "## Arbitration (the judge picks where the two systems disagree)", "", header,
            "|---:|---:|---:|---:|---:|---:|---:|", row]


def score_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render_judge(metrics: dict, title: str, chart: str | None = None) -> str:
    """LLaVA-Bench's table: relative score (candidate mean / reference mean x 100) overall and per category."""
    summary = (f"**Relative score {score_cell(metrics['relative_score'])}** (the model's mean judge score over the "
               f"reference answers' x 100) on {metrics['n']} questions; {metrics['unparsed']} judgments unparsed "
               "(left out).")
    lines = [f"# {title}", "", summary, "",
             "| category | relative score | model mean | reference mean | judged | n |",
             "|---|---:|---:|---:|---:|---:|"]
    groups = [("**overall**", metrics), *metrics["by_category"].items()]
    lines += [f"| {name} | {score_cell(m['relative_score'])} | {score_cell(m['candidate_mean'])} | "
              f"{score_cell(m['reference_mean'])} | {m['judged']} | {m['n']} |" for name, m in groups]
    if chart:
        lines += ["", f"![relative score by category]({chart})"]
    return "\n".join(lines) + "\n"


def accuracy_bars(metrics: dict) -> list[tuple[str, float, int, str]]:
    """Overall accuracy, then every breakdown group: (label, percent, n, colour)."""
    bars = [("overall", 100 * metrics["accuracy"], metrics["n"], "C0")]
    for i, (family, groups) in enumerate(breakdowns(metrics)):
        bars += [(f"{family}: {name}", 100 * s["accuracy"], s["n"], f"C{i + 1}") for name, s in groups.items()]
    return bars


def judge_bars(metrics: dict) -> list[tuple[str, float, int, str]]:
    groups = [("overall", metrics), *metrics["by_category"].items()]
    return [(name, m["relative_score"] or 0.0, m["n"], f"C{i}") for i, (name, m) in enumerate(groups)]


def write_chart(path: Path, bars: list[tuple[str, float, int, str]], title: str, xlabel: str) -> None:
    """Horizontal bars (label, value in %, n, colour), each labelled with its n."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; safe on servers and in tests
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.4 * len(bars) + 1.2))
    labels = [b[0] for b in bars][::-1]
    values = [b[1] for b in bars][::-1]
    ax.barh(labels, values, color=[b[3] for b in bars][::-1])
    for y, (value, (_, _, n, _)) in enumerate(zip(values, bars[::-1])):
        ax.text(min(value, 100) + 1, y, f"{value:.1f}% (n={n})", va="center", fontsize=8)
    ax.set_xlim(0, max(125, max(values) * 1.25))
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

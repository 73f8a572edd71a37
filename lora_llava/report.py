"""Which run of a sweep is best? A table of runs, best first: each run's overrides, its accuracy, the step its
adapter came from, train time and peak memory; as summary.md, summary.csv and summary.png.

    python -m lora_llava.report DIR... [--out OUT]

Each DIR is a run directory (it has .hydra/config.yaml) or a folder of them (a Hydra multirun sweep). OUT defaults
to DIR when there is one, else the current directory. After `python -m lora_llava -m ...` the summary is
written into the sweep folder by `SweepSummary`, a Hydra callback that conf/base.yaml registers.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

COLUMNS = ("rank", "run", "overrides", "accuracy", "n", "best_step", "train_time_s", "peak_memory_gb", "memory")


def find_runs(dirs) -> list[Path]:
    """Run directories in `dirs` or one level below them (a sweep's numbered jobs, in numeric order)."""
    runs = []
    for folder in map(Path, dirs):
        if (folder / ".hydra" / "config.yaml").is_file():
            runs.append(folder)
            continue
        jobs = [p for p in folder.iterdir() if (p / ".hydra" / "config.yaml").is_file()] if folder.is_dir() else []
        runs += sorted(jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))
    return runs


def read_events(run: Path) -> dict[str, dict]:
    """The last record of each `event` in logs/train_log.jsonl (start, best, end)."""
    path, events = run / "logs" / "train_log.jsonl", {}
    if path.is_file():
        for line in path.read_text().splitlines():
            record = json.loads(line) if line.strip() else {}
            if "event" in record:
                events[record["event"]] = record
    return events


def run_row(run: Path) -> dict:
    import yaml

    overrides_file = run / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    metrics_file = run / "eval" / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    events = read_events(run)
    end, best = events.get("end", {}), events.get("best", {})
    return {"run": str(run), "overrides": list(overrides or []),
            "accuracy": metrics.get("accuracy"), "n": metrics.get("n"), "best_step": best.get("step"),
            "train_time_s": end.get("train_runtime"), "peak_memory_gb": end.get("peak_memory_gb"),
            "memory": end.get("memory")}


def ranked(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """(rows best accuracy first, runs without an evaluation last; the overrides all runs share). Each row's
    `overrides` keeps only what sets it apart."""
    common = [o for o in rows[0]["overrides"] if all(o in r["overrides"] for r in rows)] if len(rows) > 1 else []
    for row in rows:
        row["overrides"] = " ".join(o for o in row["overrides"] if o not in common) or "(recipe defaults)"
    rows = sorted(rows, key=lambda r: (r["accuracy"] is None, -(r["accuracy"] or 0.0)))
    return [{"rank": i + 1, **row} for i, row in enumerate(rows)], common


def cell(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def render_markdown(rows: list[dict], common: list[str]) -> str:
    shared = f" Overrides common to all runs: `{' '.join(common)}`." if common else ""
    lines = ["# Sweep summary", "",
             (f"{len(rows)} runs, best accuracy first.{shared} Train time is the trainer's train_runtime; peak "
              "memory is the GPU allocator's peak, or the process's peak resident memory on CPU (summary.csv's "
              "`memory` column)."), "",
             "| rank | overrides | accuracy | n | best step | train time (s) | peak memory (GB) | run |",
             "|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['rank']} | `{r['overrides']}` | {cell(r['accuracy'])} | {cell(r['n'])} | "
                     f"{cell(r['best_step'])} | {cell(r['train_time_s'], 1)} | {cell(r['peak_memory_gb'], 2)} "
                     f"| {Path(r['run']).name} |")
    return "\n".join(lines + ["", "![accuracy by run](summary.png)", ""])


def write_chart(rows: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [r for r in rows if r["accuracy"] is not None][::-1]  # best at the top
    fig = Figure(figsize=(8, 0.45 * len(shown) + 1.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.barh([r["overrides"] for r in shown], [100 * r["accuracy"] for r in shown], color="C0")
    ax.set_xlim(0, 105)
    ax.set_xlabel("accuracy %")
    ax.set_title("runs, best first")
    fig.tight_layout()
    fig.savefig(path)


def write_summary(runs: list[Path], out: Path) -> str:
    """summary.md, summary.csv and summary.png in `out`; returns the markdown."""
    rows, common = ranked([run_row(run) for run in runs])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    markdown = render_markdown(rows, common)
    (out / "summary.md").write_text(markdown)
    write_chart(rows, out / "summary.png")
    return markdown


class SweepSummary(Callback):
    """Hydra callback: after a multirun, the summary of its jobs in the sweep folder."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        runs = find_runs([sweep_dir])
        if runs:
            write_summary(runs, sweep_dir)
            print(f"sweep summary: {sweep_dir / 'summary.md'}")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    out = None
    if "--out" in args:
        at = args.index("--out")
        if at + 1 >= len(args):
            sys.exit("lora_llava.report: --out needs a folder")
        out = Path(args.pop(at + 1))
        args.pop(at)
    if not args or any(a.startswith("-") for a in args):
        sys.exit("usage: python -m lora_llava.report DIR... [--out OUT]  (run directories or sweep folders)")
    runs = find_runs(args)
    if not runs:
        sys.exit(f"lora_llava.report: no run directories (with .hydra/config.yaml) in {', '.join(args)}")
    out = out or (Path(args[0]) if len(args) == 1 else Path.cwd())
    print(write_summary(runs, out))
    print(f"written: {out / 'summary.md'}, summary.csv, summary.png")


if __name__ == "__main__":
    main()

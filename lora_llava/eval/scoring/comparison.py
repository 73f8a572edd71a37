"""Base vs adapted as a table: overall and every breakdown group, with the difference in points. Used by the
compare stage (eval/compare.md) and the model card."""

from __future__ import annotations

from lora_llava.eval.scoring.report import breakdowns, percent


def comparison_rows(result: dict) -> list[tuple[str, dict, dict]]:
    """(group, base summary, adapted summary): overall, then every breakdown group both runs have."""
    base, adapted = result["base"], result["adapted"]
    rows = [("overall", base, adapted)]
    adapted_groups = dict(breakdowns(adapted))
    for family, groups in breakdowns(base):
        rows += [(f"{family}: {name}", s, adapted_groups[family][name]) for name, s in groups.items()
                 if name in adapted_groups.get(family, {})]
    return rows


def render_table(result: dict) -> list[str]:
    lines = ["| group | n | base % | adapted % | difference (points) |", "|---|---:|---:|---:|---:|"]
    for group, base, adapted in comparison_rows(result):
        diff = 100 * (adapted["accuracy"] - base["accuracy"])
        lines.append(f"| {group} | {base['n']} | {percent(base['accuracy'])} | {percent(adapted['accuracy'])} "
                     f"| {diff:+.2f} |")
    return lines


def render_comparison(results: dict[str, dict], heading: str = "#") -> str:
    """Markdown: one table per question set (task, general), base vs adapted with the difference per group."""
    lines = [f"{heading} Base model vs adapted model", "",
             ("The same questions, greedy answers, in one process: the base is the adapted model with its "
              "adapters (and trained projector) disabled."), ""]
    for result in results.values():
        lines += [f"{heading}# {result['title']}", "", *render_table(result), ""]
    return "\n".join(lines)

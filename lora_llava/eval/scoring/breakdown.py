"""Accuracy per group: the building block of every breakdown (by subject, by context, by a meta column)."""

from __future__ import annotations

from collections.abc import Iterable


def accuracy(correct: int, n: int) -> float:
    return correct / n if n else 0.0


def summary(flags: list[bool]) -> dict:
    """{"accuracy", "correct", "n"} for a list of right/wrong flags."""
    n, correct = len(flags), sum(bool(f) for f in flags)
    return {"accuracy": accuracy(correct, n), "correct": correct, "n": n}


def accuracy_by(flags: list[bool], groups_of: Iterable[Iterable[str]], order: Iterable[str] = ()) -> dict:
    """Accuracy per group name. `groups_of[i]` lists the groups question i belongs to (none, one or several:
    ScienceQA's TXT and IMG overlap). Groups come out in `order` first, then in order of appearance; a group
    named in `order` that no question belongs to is left out rather than reported as 0%."""
    members: dict[str, list[bool]] = {name: [] for name in order}
    for flag, groups in zip(flags, groups_of):
        for group in groups:
            members.setdefault(group, []).append(flag)
    return {name: summary(found) for name, found in members.items() if found}


def by_meta_fields(flags: list[bool], metas: list[dict], fields: Iterable[str]) -> dict:
    """{field: {value: summary}} for each meta column named in `fields`; a question without the column counts
    under "(missing)" so that every question shows up in every field's table."""
    out = {}
    for field in fields:
        values = [[_label(meta.get(field))] for meta in metas]
        out[field] = accuracy_by(flags, values)
    return out


def _label(value) -> str:
    if value is None or value == "":
        return "(missing)"
    return str(value)

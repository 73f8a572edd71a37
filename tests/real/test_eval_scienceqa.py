"""ScienceQA scoring on the real test questions (../shared/data): a LLaVA answers file for
llava_test_CQM-A.json is scored without any model, and every figure is checked against counts taken straight
from the raw files."""

import json

import pytest

from lora_llava.eval.stage import eval_stage
from lora_llava.run import RunContext

SUBJECTS = {"natural science": "NAT", "social science": "SOC", "language science": "LAN"}


def llava_output(i: int, gold: str) -> str | None:
    """Six kinds of answer in turn: three forms LLaVA parses, a wrong letter, an unparsable one, none."""
    return [gold, f"{gold}. because of the map", f"The answer is {gold}. BECAUSE: the hint says so.",
            "B" if gold == "A" else "A", f"Answer: {gold}", None][i % 6]


@pytest.fixture(scope="module")
def raw_questions(shared_data):
    return json.loads((shared_data / "scienceqa" / "llava_test_CQM-A.json").read_text())


def score_answers(shared_data, raw_questions, tmp_path, monkeypatch, *overrides):
    from lora_llava.config import compose

    monkeypatch.setattr("lora_llava.models.load.load_adapted", lambda *a, **k: pytest.fail("a model was loaded"))
    answers = tmp_path / "answers.jsonl"
    with open(answers, "w") as f:
        for i, q in enumerate(raw_questions):
            text = llava_output(i, q["conversations"][1]["value"])
            if text is not None:
                row = {"question_id": q["id"], "prompt": q["conversations"][0]["value"], "text": text,
                       "answer_id": str(i), "model_id": "llava", "metadata": {}}
                f.write(json.dumps(row) + "\n")
    sqa = shared_data / "scienceqa"
    cfg = compose("scienceqa", ["stages=[eval]", f"data.path={sqa / 'llava_test_CQM-A.json'}",
                                f"data.image_root={sqa / 'images' / 'test'}", f"eval.predictions={answers}",
                                *overrides])
    ctx = RunContext(run_dir=tmp_path / "run")
    eval_stage(cfg, ctx)
    return ctx


def expected(raw_questions, group_of) -> dict:
    """{group: (correct, n)} counted from the raw questions and the kind of answer each got."""
    out = {}
    for i, q in enumerate(raw_questions):
        for group in group_of(q):
            right, n = out.get(group, (0, 0))
            out[group] = (right + (i % 6 < 3), n + 1)
    return out


def context_of(q) -> list[str]:
    lines = q["conversations"][0]["value"].split("\n")
    has_text, has_image = any(line.startswith("Context: ") for line in lines), "image" in q
    return (["TXT"] if has_text else []) + (["IMG"] if has_image else []) or ["NO"]


def counts(groups: dict) -> dict:
    return {name: (s["correct"], s["n"]) for name, s in groups.items()}


def test_answers_file_scored_from_the_questions_alone(shared_data, raw_questions, tmp_path, monkeypatch):
    ctx = score_answers(shared_data, raw_questions, tmp_path, monkeypatch)
    m = ctx.metrics
    n = len(raw_questions)
    assert (m["n"], m["correct"]) == (4241, sum(i % 6 < 3 for i in range(n)))
    assert m["missing"] == sum(i % 6 == 5 for i in range(n))
    assert m["unparsed"] == sum(i % 6 >= 4 for i in range(n))
    assert m["known"]["hint"] == 4241
    assert counts(m["by_context"]) == expected(raw_questions, context_of)
    assert {name: s["n"] for name, s in m["by_context"].items()} == {"TXT": 2046, "IMG": 2017, "NO": 1435}
    assert m["by_subject"] == {} and m["by_grade"] == {}  # LLaVA's JSON alone carries no subject or grade
    rows = [json.loads(line) for line in (tmp_path / "run" / "eval" / "predictions.jsonl").open()]
    assert len(rows) == 4241 and rows[2]["parsed"] == rows[2]["gold"] and rows[2]["correct"]
    assert rows[0]["prompt"].endswith("\nAnswer with the option's letter from the given choices directly.")
    assert "| NAT | SOC | LAN | TXT | IMG | NO | G1-6 | G7-12 | Avg |" in \
        (tmp_path / "run" / "eval" / "report.md").read_text()


def test_subject_and_grade_from_problems_metadata(shared_data, raw_questions, tmp_path, monkeypatch):
    problems_file = shared_data / "scienceqa" / "problems_pid1-1773_think-scienceqa.json"
    problems = json.loads(problems_file.read_text())
    ctx = score_answers(shared_data, raw_questions, tmp_path, monkeypatch,
                        f"data.scienceqa.problems={problems_file}")
    m = ctx.metrics

    def subject_of(q):
        return [SUBJECTS[problems[q["id"]]["subject"]]] if q["id"] in problems else []

    def grade_of(q):
        if q["id"] not in problems:
            return []
        return ["G1-6" if int(problems[q["id"]]["grade"][len("grade"):]) <= 6 else "G7-12"]

    assert counts(m["by_subject"]) == expected(raw_questions, subject_of)
    assert counts(m["by_grade"]) == expected(raw_questions, grade_of)
    assert m["known"]["subject"] == m["known"]["grade"] == 361  # the test pids among 1..1773

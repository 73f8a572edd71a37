"""The LLM judge through the eval stage, against a scripted judge on localhost: the relative score equals the
value computed by hand, and ScienceQA arbitration counts are exact on a hand-made case (README's command)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lora_llava.config import compose
from lora_llava.run import run
from tests.endpoint_scripts import judge
from tests.servers import reply, scripted_server


def conversation(sample_id, kind, question, answer):
    return {"id": sample_id, "kind": kind, "context": f"A picture for {sample_id}.",
            "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_relative_score_equals_hand_computed(tmp_path):
    data = [conversation("c1", "conversation", "What color is it?", "red"),
            conversation("c2", "conversation", "Where is it?", "top left"),
            conversation("d1", "detail", "Describe it.", "A red circle."),
            conversation("d2", "detail", "Describe the scene.", "A blue square."),
            conversation("x1", "complex", "Why is it there?", "Because.")]
    (tmp_path / "test.json").write_text(json.dumps(data))
    # The scripted judge gives the reference 8 and the candidate 8 if it matches the reference, else 4;
    # "???" gets a judgment without scores.
    answers = {"c1": "red", "c2": "bottom", "d1": "A circle.", "d2": "???", "x1": "Because."}
    predictions = write_jsonl(tmp_path / "answers.jsonl", [{"question_id": k, "text": v} for k, v in answers.items()])
    with scripted_server(judge) as server:
        cfg = compose("instruct", ["stages=[eval]", f"generate.output={tmp_path / 'test.json'}",
                                   f"generate.image_root={tmp_path}", "eval.split=test", "model=tiny",
                                   f"eval.predictions={predictions}", f"endpoint.base_url={server.url}",
                                   "endpoint.api_key_env=null"])
        ctx = run(cfg, tmp_path / "run")
    assert server.count == 5
    metrics = ctx.metrics
    # Judged: c1 (8, 8), c2 (8, 4), d1 (8, 4), x1 (8, 8); d2 unparsed and left out.
    assert metrics["relative_score"] == pytest.approx(100 * (8 + 4 + 4 + 8) / 4 / 8)  # 75.0
    assert metrics["unparsed"] == 1 and metrics["judged"] == 4 and metrics["n"] == 5
    by = metrics["by_category"]
    assert by["conversation"]["relative_score"] == pytest.approx(100 * 6 / 8)
    assert by["detail"]["relative_score"] == pytest.approx(50.0) and by["detail"]["judged"] == 1
    assert by["complex"]["relative_score"] == pytest.approx(100.0)
    rows = [json.loads(line) for line in (tmp_path / "run" / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert all("[Answer 2]" in r["judge_prompt"] and r["judgment"] for r in rows)
    report = (tmp_path / "run" / "eval" / "report.md").read_text()
    assert "Relative score 75.0" in report and "| detail | 50.0 |" in report


ARBITER_PICKS = {2: "1", 3: "2", 4: "1", 5: "I cannot tell."}  # question number -> the arbiter's first line


def arbiter(body, number):
    text = body["messages"][-1]["content"]
    return reply(ARBITER_PICKS[int(re.search(r"Question (\d)", text).group(1))] + "\nBecause.")


def readme_command(marker: str) -> list[str]:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    line = next(line for line in readme.splitlines() if marker in line and line.startswith("python -m"))
    return line.split()


def test_arbitration_counts_exact(tmp_path):
    golds = "ABCABA"
    ours = ["A", "B", "A", "A", "B", "B"]
    theirs = ["A", "A", "C", "B", "The answer is C.", "B"]
    questions = [{"id": str(i), "conversations": [
        {"from": "human", "value": f"Question {i}: which one?\nA. one\nB. two\nC. three"},
        {"from": "gpt", "value": gold}]} for i, gold in enumerate(golds, 1)]
    (tmp_path / "llava_test_CQM-A.json").write_text(json.dumps(questions))
    write_jsonl(tmp_path / "our_answers.jsonl", [{"question_id": str(i), "text": t} for i, t in enumerate(ours, 1)])
    write_jsonl(tmp_path / "other_answers.jsonl", [{"question_id": str(i), "text": t} for i, t in enumerate(theirs, 1)])
    (tmp_path / "images" / "test").mkdir(parents=True)
    with scripted_server(arbiter) as server:
        # README's command; substitution: the scripted server instead of a hosted API (no key), run dir named.
        proc = subprocess.run([sys.executable, *readme_command("arbitrate_with")[1:],
                               f"endpoint.base_url={server.url}", "endpoint.api_key_env=null",
                               "hydra.run.dir=run"], check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert server.count == 4  # only the four disagreements (questions 2-5) were sent
    arbitration = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())["arbitration"]
    assert {k: arbitration[k] for k in ("disagreements", "ours_won", "other_won", "unresolved", "n")} == {
        "disagreements": 4, "ours_won": 2, "other_won": 1, "unresolved": 1, "n": 6}
    # ours right on 1, 2, 4, 5; theirs on 1, 3; arbitrated: 1, 2 (ours), 3 (theirs), 4 (ours), 5 (ours kept).
    assert arbitration["ours"] == pytest.approx(4 / 6) and arbitration["other"] == pytest.approx(2 / 6)
    assert arbitration["arbitrated"] == pytest.approx(5 / 6)
    assert "ours won 2, other won 1, unresolved 1" in proc.stdout


def test_references_from_the_endpoint_are_asked_once(tmp_path):
    data = [conversation(f"q{i}", "detail", f"Describe picture {i}.", "unused") for i in range(3)]
    (tmp_path / "test.json").write_text(json.dumps(data))
    predictions = write_jsonl(tmp_path / "answers.jsonl", [{"question_id": "q0", "text": "REFERENCE q0"},
                                                           {"question_id": "q1", "text": "other"},
                                                           {"question_id": "q2", "text": "REFERENCE q2"}])

    def script(body, number):  # references first, then the scripted judge
        if "[Answer 1]" in str(body["messages"][-1]["content"]):
            return judge(body, number)
        return reply("REFERENCE q" + re.search(r"picture (\d)", body["messages"][-1]["content"]).group(1))

    overrides = ["stages=[eval]", f"generate.output={tmp_path / 'test.json'}", f"generate.image_root={tmp_path}",
                 "eval.split=test", "model=tiny", f"eval.predictions={predictions}", "eval.judge.reference=endpoint",
                 "endpoint.api_key_env=null"]
    with scripted_server(script) as server:
        for run_name in ("first", "second"):  # the second run shares the cache: nothing is sent again
            cfg = compose("instruct", [*overrides, f"endpoint.base_url={server.url}",
                                       f"endpoint.cache_dir={tmp_path / 'cache'}"])
            metrics = run(cfg, tmp_path / run_name).metrics
            assert metrics["relative_score"] == pytest.approx(100 * (8 + 4 + 8) / 3 / 8)
    assert server.count == 6  # three references and three judgments, once

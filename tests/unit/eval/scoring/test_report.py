"""report.md and report.png: the score table a person reads first, and a chart that renders."""

import json

from PIL import Image

from lora_llava.data.samples import Sample, Turn
from lora_llava.eval.scoring import score
from lora_llava.eval.scoring.report import render_markdown, write_results


def scienceqa_metrics():
    samples = [Sample(str(i), [Turn("user", "Q"), Turn("assistant", "A")], [],
                      {"answer_index": 0, "choices": ["x", "y"], "hint": "h" if i % 2 else "",
                       "has_image": i % 3 == 0, "subject": "natural science", "grade": f"grade{i + 1}"})
               for i in range(8)]
    return score("scienceqa", samples, ["A", "A", "B", "A", "zzz", "A", "A", "B"])


def test_writes_all_files_and_metrics_match_rows(tmp_path):
    rows, metrics = scienceqa_metrics()
    write_results(tmp_path, rows, metrics, "ScienceQA test")
    written = [json.loads(line) for line in (tmp_path / "predictions.jsonl").open()]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert written == rows
    assert saved["accuracy"] == sum(r["correct"] for r in written) / len(written) == 5 / 8
    with Image.open(tmp_path / "report.png") as chart:
        assert chart.size[0] > 300 and chart.size[1] > 200
    assert "![accuracy by group](report.png)" in (tmp_path / "report.md").read_text()


def test_markdown_leads_with_the_score_and_llava_table():
    _, metrics = scienceqa_metrics()
    lines = render_markdown(metrics, "ScienceQA test").splitlines()
    assert lines[0] == "# ScienceQA test"
    assert lines[2].startswith("**Accuracy 62.50%**: 5 of 8 correct; 1 outputs named no answer")
    # LLaVA's column order; SOC and LAN unknown here, shown as "-" rather than 0
    assert lines[4] == "| NAT | SOC | LAN | TXT | IMG | NO | G1-6 | G7-12 | Avg |"
    assert lines[6].startswith("| 62.50 | - | - |") and lines[6].endswith("| 62.50 |")
    assert "| context: TXT | 75.00 | 3 | 4 |" in lines and "| context: IMG | 100.00 | 3 | 3 |" in lines
    assert "| unparsed | 1 |" in lines


def test_markdown_for_plain_metrics_and_meta_fields(tmp_path):
    samples = [Sample(str(i), [Turn("user", "Q"), Turn("assistant", "red")], [], {"site": "ab"[i % 2]})
               for i in range(4)]
    rows, metrics = score("qa", samples, ["red", "Red.", "blue", "red"], metadata_fields=["site"])
    text = render_markdown(metrics, "qa")
    assert "NAT" not in text
    assert "| **overall** | **75.00** | 3 | 4 |" in text
    assert "| site: a | 50.00 | 1 | 2 |" in text
    write_results(tmp_path, rows, metrics, "qa")
    assert (tmp_path / "report.png").stat().st_size > 0


def test_markdown_says_how_many_questions_the_breakdowns_cover():
    _, metrics = scienceqa_metrics()
    metrics["known"] = {"subject": 3, "grade": 8, "hint": 8}
    assert "Metadata known for: subject 3 of 8 questions; each breakdown covers only those." in \
        render_markdown(metrics, "t")

"""A Hydra multirun of the smoke recipe ends with a summary of its jobs, best accuracy first; `python -m
lora_llava.report DIR` builds the same summary for any run directories."""

import csv
import json
import subprocess
import sys

from lora_llava import report


def test_two_job_sweep_writes_a_summary_ranked_by_accuracy(tmp_path):
    sweep = tmp_path / "sweep"
    # Two small jobs (2 and 48 steps on a smaller validation/test split), README's sweep command otherwise.
    command = [sys.executable, "-m", "lora_llava", "-m", "recipe=smoke", "train.max_steps=2,48",
               "stages=[train,eval]", "train.eval_steps=null", "data.synthetic.n_eval=24", "train.report_to=[]",
               f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sweep summary:" in proc.stdout
    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    accuracy = {job: json.loads((sweep / job / "eval" / "metrics.json").read_text())["accuracy"] for job in "01"}
    assert len(rows) == 2 and [r["rank"] for r in rows] == ["1", "2"]
    ranked_jobs = [r["run"].rsplit("/", 1)[-1] for r in rows]
    assert ranked_jobs == sorted("01", key=lambda job: -accuracy[job])
    assert [float(r["accuracy"]) for r in rows] == sorted(accuracy.values(), reverse=True)
    # each row names what differs; what all jobs share is said once, above the table
    assert {r["overrides"] for r in rows} == {"train.max_steps=48", "train.max_steps=2"}
    assert "common to all runs: `stages=[train,eval]" in (sweep / "summary.md").read_text()
    assert all(float(r["train_time_s"]) > 0 and float(r["peak_memory_gb"]) > 0 for r in rows)
    assert (sweep / "summary.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 1 | `" in (sweep / "summary.md").read_text()
    # the same table from the report command, for any set of run directories
    report.main([str(sweep / "1"), str(sweep / "0"), "--out", str(tmp_path / "again")])
    with open(tmp_path / "again" / "summary.csv") as f:
        assert [r["accuracy"] for r in csv.DictReader(f)] == [r["accuracy"] for r in rows]

"""README's worked example, "Generate instruction data and judge answers", command by command: 20 annotated
images -> a dry run -> instruction data -> validate, train, judge. Substitutions (stated in README too): a
scripted OpenAI-compatible server on localhost instead of the hosted API (it writes instruction data from
the annotations and judges like tests/endpoint_scripts.py says), and the tiny random LLaVA instead of
LLaVA-1.5-7B (model=tiny quant=none), trained for three steps (train.max_steps=3) and answering briefly
(eval.max_new_tokens=16)."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.endpoint_scripts import annotated_images, judge, writer
from tests.servers import scripted_server

README = Path(__file__).resolve().parents[2] / "README.md"
KEY = "sk-readme-example-91c3e0"


def readme_commands() -> list[list[str]]:
    section = README.read_text().split("## Generate instruction data and judge answers", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [shlex.split(line) for line in block.splitlines() if line.startswith("python -m lora_llava")]


def endpoint_script(body, number):
    is_judge = "careful judge" in body["messages"][0]["content"]
    return judge(body, number) if is_judge else writer(body, number)


def run(cmd, cwd, url, *extra):
    args = [sys.executable, *cmd[1:], "model=tiny", "quant=none", f"endpoint.base_url={url}",
            "train.report_to=[]", "train.max_steps=3", "eval.max_new_tokens=16", *extra]
    return subprocess.run(args, check=False, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OPENAI_API_KEY": KEY})


def test_readme_worked_example(tmp_path):
    annotated_images(tmp_path / "my_images", n=20)
    dry, generate, train = readme_commands()
    with scripted_server(endpoint_script) as server:
        proc = run(dry, tmp_path, server.url, "hydra.run.dir=outputs/dry")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert server.count == 0 and "dry run: 60 requests" in proc.stdout  # 20 images x 3 kinds
        assert "A red circle in the top left." in proc.stdout  # the first rendered prompt

        proc = run(generate, tmp_path, server.url)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert server.count == 60
        records = json.loads((tmp_path / "my_images" / "instruct.json").read_text())
        assert len(records) == 58  # two malformed generations rejected

        proc = run(train, tmp_path, server.url)
        assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "outputs" / "instruct-train"
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    report = json.loads((run_dir / "data_report.json").read_text())
    assert report["splits"]["train"]["rejected"] == 0 and report["splits"]["validation"]["rejected"] == 0
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert metrics["n"] == len(rows) == report["splits"]["validation"]["samples"] > 0
    # The scripted judge: reference 8, model 8 when its answer equals the reference, else 4.
    model_scores = [8 if r["output"] == r["gold"] else 4 for r in rows]
    assert metrics["relative_score"] == pytest.approx(100 * sum(model_scores) / len(rows) / 8)
    assert f"judge relative score: {metrics['relative_score']:.1f}" in proc.stdout
    assert KEY not in proc.stdout + proc.stderr

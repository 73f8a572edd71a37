"""stages=[generate] as a user runs it (python -m lora_llava, a subprocess) against a scripted server: a run
killed half-way and rerun sends only the missing requests and writes the same file as an uninterrupted run;
malformed generations are rejected with their raw text; the API key appears nowhere it could leak to."""

import json
import os
import subprocess
import sys
import time

from tests.endpoint_scripts import annotated_images, writer
from tests.servers import scripted_server, stall

KEY = "sk-lora-llava-test-4f1d9c2b7e"  # distinctive, so any copy of it is found


def command(run_dir, server, annotations, *extra):
    # Substitution: model=tiny (local, random) instead of LLaVA-1.5-7B, whose processor generate screens with.
    return [sys.executable, "-m", "lora_llava", "recipe=instruct", "stages=[generate]", f"hydra.run.dir={run_dir}",
            f"generate.annotations={annotations}", f"generate.image_root={annotations.parent}",
            f"generate.output={run_dir}/generated/llava.json", "model=tiny", "quant=none",
            f"endpoint.base_url={server.url}", "endpoint.api_key_env=LL_TEST_KEY", "endpoint.backoff_base=0.01",
            "generate.kinds=[conversation,detail]", "endpoint.max_concurrency=1", *extra]


def run(cmd):
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env={**os.environ, "LL_TEST_KEY": KEY})


def wait_for(condition, timeout=240.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_killed_run_resends_only_missing_requests(tmp_path):
    annotations = annotated_images(tmp_path / "images", n=10)  # 10 images x 2 kinds = 20 requests
    hold = {"at": 9}  # the 9th request hangs until the run is killed: 8 answers are in the cache by then

    def script(body, number):
        return stall(120) if number == hold["at"] else writer(body, number)

    with scripted_server(script) as server:
        killed = tmp_path / "killed"
        proc = subprocess.Popen(command(killed, server, annotations), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={**os.environ, "LL_TEST_KEY": KEY})
        wait_for(lambda: server.count >= hold["at"])
        proc.kill()
        proc.wait()
        assert not (killed / "generated" / "llava.json").exists()
        hold["at"] = None
        resumed = run(command(killed, server, annotations))
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert server.count - 9 == 20 - 8  # only the missing twelve were sent
        uninterrupted = run(command(tmp_path / "whole", server, annotations))
        assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
        assert server.count - 9 - 12 == 20
    assert server.seen[0].headers["authorization"] == f"Bearer {KEY}"  # the key was used ...

    written = (killed / "generated" / "llava.json").read_bytes()
    assert written == (tmp_path / "whole" / "generated" / "llava.json").read_bytes()
    records = json.loads(written)
    rejects = [json.loads(line) for line in (killed / "generated" / "rejects.jsonl").read_text().splitlines()]
    assert len(records) == 18 and {r["id"] for r in rejects} == {"img07-conversation", "img08-detail"}
    assert all(r["raw"] and r["reason"] for r in rejects)
    assert "mentions 'bounding box'" in next(r["reason"] for r in rejects if r["id"] == "img08-detail")
    assert "18 records from 10 images" in resumed.stdout

    # ... and leaked nowhere: not in the run directories (config, logs, cache, output) nor on the console.
    for run_dir in (killed, tmp_path / "whole"):
        for path in run_dir.rglob("*"):
            assert not path.is_file() or KEY.encode() not in path.read_bytes(), path
    for proc in (resumed, uninterrupted):
        assert KEY not in proc.stdout + proc.stderr


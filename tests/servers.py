"""Real servers on localhost for tests: started as subprocesses, waited for until they answer, stopped after.

`transformers_serve(model_dir)` runs `transformers serve MODEL_DIR` (transformers' own OpenAI-compatible
server, from the `transformers[serving]` extra) on a free port and yields its base URL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the server did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def transformers_cli() -> list[str]:
    """The `transformers` command of this environment (beside the running python)."""
    exe = Path(sys.executable).with_name("transformers")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("transformers")
    if not found:
        pytest.skip("the transformers CLI is not installed")
    return [found]


@contextlib.contextmanager
def transformers_serve(model_dir: Path, log: Path, timeout: float = 180.0):
    """`transformers serve MODEL_DIR` on 127.0.0.1, CPU; yields the base URL (http://127.0.0.1:PORT)."""
    pytest.importorskip("fastapi", reason="transformers serve needs `pip install 'transformers[serving]'`")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [*transformers_cli(), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
               "--device", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until_up(url, process, log, timeout)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

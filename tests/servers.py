"""Real HTTP servers on localhost for the endpoint tests (and any other test that needs one).

- `ScriptedServer`: a stdlib `http.server` speaking the Chat Completions protocol (plain JSON or server-sent
  events when the request streams) in a thread. A script (request body, request number) -> action decides each
  answer: `reply(text)`, `status(code, headers)`, `stall(seconds)`, `drop()` (the connection closes half-way
  through the body). Every request is recorded with its headers (names lower-cased), arrival time and number.
- `transformers_serve(model_dir)`: `transformers serve` (transformers' own OpenAI-compatible server) on a
  free port, as a subprocess, for protocol compatibility; `servable_tiny_llava()` gives it the tiny LLaVA with
  a chat template (the tiny processor has none, and `transformers serve` renders prompts through it).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def reply(text: str, prompt_tokens: int = 10, completion_tokens: int | None = None) -> dict:
    return {"do": "reply", "text": text, "usage": (prompt_tokens, completion_tokens or len(text.split()))}


def status(code: int, headers: dict | None = None) -> dict:
    return {"do": "status", "code": code, "headers": headers or {}}


def stall(seconds: float, then: dict | None = None) -> dict:
    return {"do": "stall", "seconds": seconds, "then": then}


def drop() -> dict:
    return {"do": "drop"}


@dataclass
class Seen:
    number: int
    body: dict
    headers: dict
    at: float


def completion(body: dict, text: str, usage: tuple[int, int]) -> dict:
    return {"id": "chatcmpl-scripted", "object": "chat.completion", "created": 0, "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}}


def chunks(body: dict, text: str, usage: tuple[int, int]) -> list[dict]:
    """The text in three-character deltas, then a usage-only chunk, as OpenAI streams with include_usage."""
    base = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 0, "model": body.get("model")}
    out = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": text[i:i + 3]},
                                 "finish_reason": None}]} for i in range(0, len(text), 3)]
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    out.append({**base, "choices": [], "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                                                 "total_tokens": sum(usage)}})
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ScriptedServer

    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        seen = self.server.record(body, {k.lower(): v for k, v in self.headers.items()})
        try:
            self.act(self.server.script(body, seen.number), body)
        finally:
            self.server.leave()

    def act(self, action: dict, body: dict):
        if action["do"] == "stall":
            time.sleep(action["seconds"])
            action = action["then"] or reply("late")
        if action["do"] == "status":
            self.send_json(action["code"], {"error": {"message": f"scripted {action['code']}", "type": "scripted"}},
                           action["headers"])
        elif action["do"] == "drop":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "400")
            self.end_headers()
            self.wfile.write(b'{"id": "chatcmpl-cut", "choices": [{"ind')
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif body.get("stream"):
            self.send_stream(chunks(body, action["text"], action["usage"]))
        else:
            self.send_json(200, completion(body, action["text"], action["usage"]))

    def send_json(self, code: int, payload: dict, headers: dict | None = None):
        data = json.dumps(payload).encode()
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_stream(self, events: list[dict]):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for event in events:
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script
        self.seen: list[Seen] = []
        self.in_flight = self.max_in_flight = 0
        self.seen_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def record(self, body: dict, headers: dict) -> Seen:
        with self.seen_lock:
            seen = Seen(len(self.seen) + 1, body, headers, time.monotonic())
            self.seen.append(seen)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return seen

    def leave(self):
        with self.seen_lock:
            self.in_flight -= 1

    @property
    def count(self) -> int:
        return len(self.seen)


@contextmanager
def scripted_server(script):
    server = ScriptedServer(script)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def servable_tiny_llava(target: Path, seed: int = 0) -> Path:
    """A copy of the tiny LLaVA checkpoint with a chat template, which `transformers serve` needs."""
    from lora_llava.models.tiny import tiny_checkpoint

    shutil.copytree(tiny_checkpoint(seed), target)
    from lora_llava.models.llava import vicuna_chat_template

    (target / "chat_template.jinja").write_text(vicuna_chat_template("<image>"))  # the training format
    return target


@contextmanager
def transformers_serve(model_dir: Path, log: Path | None = None, startup_timeout: float = 180.0):
    """`transformers serve MODEL_DIR` on a free port (CPU); yields the base URL (…/v1)."""
    port = free_port()
    exe = Path(sys.executable).with_name("transformers")
    cmd = [str(exe), "serve", str(model_dir), "--port", str(port), "--device", "cpu", "--host", "127.0.0.1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    log = log or model_dir.parent / f"serve-{port}.log"  # a file, not a pipe: an unread pipe would block the server
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_up(url, proc, startup_timeout, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"transformers serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"transformers serve did not answer on {url} within {timeout} s")

"""The push stage against a fake Hub at the HTTP layer: huggingface_hub's real HfApi builds every request and
a mock transport answers it, so the test sees exactly what would be sent (and nothing reaches the network)."""

import base64
import hashlib
import json
import logging
import re

import httpx2
import pytest
from huggingface_hub import constants, set_client_factory
from huggingface_hub.utils._http import default_client_factory

from lora_llava.export.publish import PushError
from lora_llava.run import run
from tests.conftest import smoke_config

TOKEN = "hf_lorallavaTestToken9x7QwErTy2024ZZ"  # unique enough that finding it anywhere means it leaked
REPO = "acme/shapes-adapter"


class FakeHub:
    """Answers the Hub endpoints a push uses; records requests, repos and commits."""

    def __init__(self, existing: dict | None = None, fail_commit: bool = False):
        self.repos = dict(existing or {})  # repo_id -> visibility
        self.requests, self.commits = [], []
        self.fail_commit = fail_commit

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = request.read()
        self.requests.append((request.method, request.url.path, dict(request.headers), body))
        path = request.url.path
        if path == "/api/repos/create":
            return self.create(json.loads(body))
        if path == "/api/validate-yaml":
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        match = re.match(r"^/api/models/([^/]+/[^/]+)(?:/(preupload|commit)/main)?$", path)
        if not match or match[1] not in self.repos:
            return httpx2.Response(404, json={"error": f"fake hub: nothing at {request.method} {path}"})
        if match[2] is None:
            return httpx2.Response(200, json={"id": match[1], "private": self.repos[match[1]] == "private"})
        if match[2] == "preupload":
            files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                     for f in json.loads(body)["files"]]
            return httpx2.Response(200, json={"files": files})
        return self.commit(match[1], body)

    def create(self, payload: dict) -> httpx2.Response:
        repo_id = f"{payload['organization']}/{payload['name']}"
        url = f"https://huggingface.co/{repo_id}"
        if repo_id in self.repos:
            return httpx2.Response(409, json={"error": "You already created this model repo", "url": url})
        self.repos[repo_id] = payload.get("visibility", "public")
        return httpx2.Response(200, json={"url": url})

    def commit(self, repo_id: str, body: bytes) -> httpx2.Response:
        if self.fail_commit:
            # what a read-only token gets (a 5xx would be retried with backoff first: slow for a test)
            return httpx2.Response(403, json={"error": "You have read access but not the required rights"})
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        files = {x["value"]["path"]: base64.b64decode(x["value"]["content"])
                 for x in lines if x["key"] == "file"}
        self.commits.append({"repo": repo_id, "summary": lines[0]["value"]["summary"], "files": files})
        return httpx2.Response(200, json={"commitUrl": f"https://huggingface.co/{repo_id}/commit/abc123",
                                          "commitOid": "abc123"})


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A fake Hub behind huggingface_hub's HTTP client, online mode, HF_TOKEN set and no login cache."""
    fake = FakeHub()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no_login" / "token"))
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(lambda r: fake(r))))
    yield fake
    set_client_factory(default_client_factory)


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    """An adapter folder as the train stage writes it (LoRA, nudged off its zero init, and the projector),
    with the run's eval/metrics.json beside it."""
    import torch

    from lora_llava.models.adapters import apply_adapters
    from lora_llava.models.load import build_model_and_processor, save_adapter

    cfg = smoke_config()
    model, processor = build_model_and_processor(cfg.model, cfg.quant)
    model = apply_adapters(model, cfg.peft, quantized=False, gradient_checkpointing=False)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.01)
    run_dir = tmp_path_factory.mktemp("adapter_run")
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "metrics.json").write_text(json.dumps({"accuracy": 0.75, "n": 8}))
    return save_adapter(model, processor, run_dir / "adapter", cfg)


def push_config(adapter_dir, *overrides):
    return smoke_config("stages=[push]", f"adapter={adapter_dir}", f"hub.repo_id={REPO}", *overrides)


def folder_digest(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_token_nowhere(run_dir, *texts):
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), f"token written to {path}"
    for text in texts:
        assert TOKEN not in text


@pytest.mark.parametrize("private", [True, False])
def test_push_creates_the_repo_and_uploads_exactly_the_adapter(hub, adapter_dir, tmp_path, capsys, caplog,
                                                                private):
    caplog.set_level(logging.DEBUG)
    source_before = folder_digest(adapter_dir)
    ctx = run(push_config(adapter_dir, f"hub.private={str(private).lower()}"), tmp_path)
    out = capsys.readouterr()
    assert hub.repos == {REPO: "private" if private else "public"}
    assert len(hub.commits) == 1 and hub.commits[0]["repo"] == REPO
    assert hub.commits[0]["summary"] == "Upload LoRA adapter (r=16) and projector for " \
        "tiny (lora_llava recipe smoke; test accuracy 0.7500)"
    uploaded = {name: hashlib.sha256(data).hexdigest() for name, data in hub.commits[0]["files"].items()}
    assert uploaded == folder_digest(tmp_path / "adapter") == folder_digest(tmp_path / "hub_upload")
    assert uploaded["adapter_model.safetensors"] == source_before["adapter_model.safetensors"]
    assert f"to https://huggingface.co/{REPO} ({'private' if private else 'public'}) in one commit" in out.out
    assert ctx.extra["hub_url"] == f"https://huggingface.co/{REPO}"
    # the token travels only in the Authorization header, and nowhere the run leaves behind
    sent = {path: headers.get("authorization") for _, path, headers, _ in hub.requests}
    assert sent["/api/repos/create"] == sent[f"/api/models/{REPO}/commit/main"] == f"Bearer {TOKEN}"
    assert set(sent.values()) <= {f"Bearer {TOKEN}", None}
    assert not [p for _, p, _, body in hub.requests if TOKEN.encode() in body]
    assert_token_nowhere(tmp_path, out.out, out.err, caplog.text)
    assert folder_digest(adapter_dir) == source_before


def test_existing_public_repo_is_refused_when_private_is_asked(hub, adapter_dir, tmp_path):
    hub.repos[REPO] = "public"
    with pytest.raises(PushError, match="already exists and is public"):
        run(push_config(adapter_dir), tmp_path)
    assert not hub.commits


def test_failed_upload_leaves_the_adapter_untouched_and_says_what_failed(hub, adapter_dir, tmp_path, capsys,
                                                                         caplog):
    hub.fail_commit = True
    with pytest.raises(PushError) as err:
        run(push_config(adapter_dir), tmp_path)
    message = str(err.value)
    assert f"while uploading {tmp_path / 'hub_upload'} to {REPO}" in message
    assert "403" in message and "required rights" in message
    assert f"{tmp_path / 'adapter'} is unchanged" in message
    out = capsys.readouterr()
    assert_token_nowhere(tmp_path, message, out.out, out.err, caplog.text)
    assert folder_digest(tmp_path / "adapter") == folder_digest(tmp_path / "hub_upload")


def test_dry_run_stages_and_lists_without_a_token_or_network(hub, adapter_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    run(smoke_config("stages=[push]", f"adapter={adapter_dir}", "hub.dry_run=true"), tmp_path)
    staged = folder_digest(tmp_path / "hub_upload")
    assert staged == folder_digest(tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json"} <= set(staged)
    out = capsys.readouterr().out
    assert all(name in out for name in staged) and "nothing uploaded" in out
    assert not hub.requests


def test_push_without_a_token_says_where_it_comes_from(hub, adapter_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(PushError, match="HF_TOKEN.*hf auth login"):
        run(push_config(adapter_dir), tmp_path)
    assert not hub.requests


def test_token_is_not_a_config_key():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        smoke_config(f"hub.token={TOKEN}")
    with pytest.raises(ValueError, match="hub.repo_id"):
        from lora_llava.checks import check_values

        check_values(smoke_config("stages=[push]"))


def test_push_of_the_merged_model_sends_merged_folder(hub, adapter_dir, tmp_path):
    cfg = push_config(adapter_dir, "stages=[export,push]", "export.merge=true", "export.dtype=float32",
                      "hub.what=merged")
    run(cfg, tmp_path)
    files = hub.commits[0]["files"]
    sent = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    assert sent == folder_digest(tmp_path / "merged")
    assert {"config.json", "generation_config.json", "verification.json", "README.md"} <= set(sent)
    assert json.loads(files["verification.json"])["passed"] is True
    assert "Upload merged model" in hub.commits[0]["summary"]


@pytest.fixture
def silent_hub(monkeypatch, tmp_path):
    """A local TCP listener that accepts every connection and never answers, as huggingface_hub's endpoint
    (what HF_ENDPOINT sets), reached through huggingface_hub's real HTTP client."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])  # kept open, never read, never answered
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no_login" / "token"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    set_client_factory(default_client_factory)
    from huggingface_hub import HfApi  # noqa: F401 - imported here, so its import time is not counted below

    yield endpoint, held
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_hub_that_never_answers_ends_within_hub_timeout(silent_hub, adapter_dir, tmp_path, monkeypatch):
    import threading
    import time

    from lora_llava.export import publish

    endpoint, held = silent_hub
    timed, upload = {}, publish.upload

    def timed_upload(*args, **kwargs):
        start = time.monotonic()
        try:
            return upload(*args, **kwargs)
        finally:
            timed["seconds"] = time.monotonic() - start

    monkeypatch.setattr(publish, "upload", timed_upload)
    outcome = {}

    def push():
        try:
            run(push_config(adapter_dir, "hub.timeout=1.5"), tmp_path)
        except Exception as err:  # noqa: BLE001 - inspected below
            outcome["error"] = err

    worker = threading.Thread(target=push, daemon=True)  # a hang fails the test instead of blocking the suite
    worker.start()
    worker.join(timeout=180)
    assert not worker.is_alive(), "the push never returned"
    assert held, "the listener was reached"
    assert 1.5 <= timed["seconds"] < 1.5 + 2.5, timed  # one request, timed out; the rest is a loaded machine
    error = outcome["error"]
    assert isinstance(error, PushError)
    assert f"while creating {REPO}: {endpoint} did not answer within hub.timeout=1.5 s" in str(error)
    assert "raise hub.timeout" in str(error) and TOKEN not in str(error)

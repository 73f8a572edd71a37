"""An OpenAI-compatible Chat Completions client for many requests: bounded concurrency, a requests-per-minute
limit, retries with exponential backoff and jitter (honouring Retry-After), token and cost accounting, and the
on-disk cache (endpoint/cache.py) that makes a rerun send only what is missing.

The `openai` package does the HTTP; its own retries are off so that every attempt passes our rate limit and
is counted. The key is read from the environment variable `endpoint.api_key_env` and handed to the client
only: it is never logged, cached or written.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path

from lora_llava.endpoint.cache import RequestCache, request_key
from lora_llava.errors import UserError

log = logging.getLogger("lora_llava")

RETRY_STATUS = (408, 409, 429, 500, 502, 503, 504)
FATAL_STATUS = {401: "the key was refused", 403: "access was denied", 404: "no such model or URL"}


class RequestFailed(Exception):
    """One request that could not be answered (after its retries); the run goes on without it. `status`: the
    last HTTP status, None when no answer came (connection refused or dropped, timeout)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class EndpointError(UserError):
    """The endpoint refuses every request (bad key, wrong URL or model): the stage stops. `status`: the HTTP
    status (a key of FATAL_STATUS)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def estimate_tokens(text: str) -> int:
    """A rough count (4 characters a token) for dry runs and servers that report no usage."""
    return max(1, len(text) // 4)


@dataclass
class Reply:
    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached: bool = False


@dataclass
class Usage:
    """What a run cost: requests sent (retries included), answers from the cache, failures, tokens."""

    price_in: float = 0.0
    price_out: float = 0.0
    sent: int = 0
    answered: int = 0
    cached: int = 0
    retries: int = 0
    failures: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def cost(self) -> float:
        return (self.input_tokens * self.price_in + self.output_tokens * self.price_out) / 1000

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def line(self) -> str:
        return (f"{self.answered} answered, {self.cached} from cache, {self.failures} failed, {self.retries} "
                f"retries; tokens in {self.input_tokens} / out {self.output_tokens}; cost {self.cost:.4f}")

    def as_dict(self) -> dict:
        names = ("sent", "answered", "cached", "retries", "failures", "input_tokens", "output_tokens")
        return {**{n: getattr(self, n) for n in names}, "cost": round(self.cost, 6)}


class RateLimiter:
    """At most `per_minute` request starts a minute, spaced evenly (shared by every worker thread)."""

    def __init__(self, per_minute: float | None):
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.next_start = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        time.sleep(max(0.0, start - now))


def retry_after(err: Exception) -> float | None:
    """Seconds the server asked us to wait (Retry-After: seconds or an HTTP date; retry-after-ms)."""
    response = getattr(err, "response", None)
    headers = getattr(response, "headers", None) or {}
    if headers.get("retry-after-ms"):
        return float(headers["retry-after-ms"]) / 1000
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def is_transient(err: Exception) -> bool:
    """429, 5xx, timeouts and dropped connections are worth another try; a 400 or a 401 is not."""
    import openai

    if isinstance(err, openai.APIStatusError):
        return err.status_code in RETRY_STATUS
    if isinstance(err, openai.APIConnectionError):
        return True
    # A connection closed while the body is read surfaces from the HTTP library itself, not as an openai error.
    return type(err).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "h11")


def describe(err: Exception) -> str:
    status = getattr(err, "status_code", None)
    name = type(err).__name__
    return f"HTTP {status} ({name})" if status else name


class Endpoint:
    """The client of one `endpoint.*` config, with its cache file."""

    def __init__(self, cfg, cache_path: str | Path | None):
        self.cfg = cfg
        self.cache = RequestCache(cache_path)
        self.usage = Usage(cfg.price_per_1k_input or 0.0, cfg.price_per_1k_output or 0.0)
        self.limiter = RateLimiter(cfg.requests_per_minute)
        self._client = None
        self._client_lock = threading.Lock()

    @property
    def client(self):
        with self._client_lock:  # one client for every worker thread (its connection pool is thread-safe)
            return self._client or self._make_client()

    def _make_client(self):
        try:
            from openai import OpenAI
        except ImportError:
            raise UserError("the endpoint client needs the openai package: "
                            "pip install 'lora_llava[endpoint]'") from None
        env = self.cfg.api_key_env
        key = os.environ.get(env) if env else None
        if env and not key:
            raise UserError(f"endpoint.api_key_env={env}: the environment variable {env} is not set")
        # One INFO line per request from the HTTP library would swamp the run's log; failures are ours to report.
        for name in ("httpx", "httpx2"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # Local servers (vLLM, transformers serve, llama.cpp) take any key; the client insists on one.
        self._client = OpenAI(base_url=self.cfg.base_url, api_key=key or "none",
                              timeout=self.cfg.timeout, max_retries=0)
        return self._client

    def params(self, max_tokens: int) -> dict:
        params = {"temperature": self.cfg.temperature, "max_tokens": max_tokens}
        if self.cfg.seed is not None:
            params["seed"] = self.cfg.seed
        return params

    def complete(self, messages: list[dict], max_tokens: int) -> Reply:
        """The answer to one request: from the cache, or from the endpoint (then cached)."""
        params = self.params(max_tokens)
        key = request_key(self.cfg.model, messages, params)
        hit = self.cache.get(key)
        if hit is not None:
            self.usage.add(cached=1)
            return Reply(hit["text"], hit["input_tokens"], hit["output_tokens"], cached=True)
        reply = self._with_retries(lambda: self._send(messages, params))
        self.cache.put(key, {"text": reply.text, "input_tokens": reply.input_tokens,
                             "output_tokens": reply.output_tokens})
        self.usage.add(answered=1, input_tokens=reply.input_tokens, output_tokens=reply.output_tokens)
        return reply

    def _send(self, messages: list[dict], params: dict) -> Reply:
        self.usage.add(sent=1)
        create = self.client.chat.completions.create
        if not self.cfg.stream:
            response = create(model=self.cfg.model, messages=messages, **params)
            return self._reply(response.choices[0].message.content or "", response.usage, messages)
        parts, usage = [], None
        for chunk in create(model=self.cfg.model, messages=messages, stream=True,
                            stream_options={"include_usage": True}, **params):
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
        return self._reply("".join(parts), usage, messages)

    @staticmethod
    def _reply(text: str, usage, messages: list[dict]) -> Reply:
        if usage is None:  # some servers report no usage: estimate, so the cost line is not zero
            return Reply(text, estimate_tokens(str(messages)), estimate_tokens(text))
        return Reply(text, usage.prompt_tokens or 0, usage.completion_tokens or 0)

    def _with_retries(self, send) -> Reply:
        _ = self.client  # built (and openai imported) before the rate limiter starts timing
        for attempt in range(self.cfg.max_retries + 1):
            self.limiter.wait()
            try:
                return send()
            except Exception as err:  # noqa: BLE001 - sorted into fatal, transient and per-request below
                status = getattr(err, "status_code", None)
                if status in FATAL_STATUS:
                    raise EndpointError(f"{self.cfg.base_url} answered HTTP {status}: {FATAL_STATUS[status]} "
                                        f"(check endpoint.model={self.cfg.model}, endpoint.base_url and the key "
                                        f"in ${self.cfg.api_key_env})", status) from None
                if not is_transient(err) or attempt == self.cfg.max_retries:
                    raise RequestFailed(f"{describe(err)} after {attempt + 1} attempt(s)", status) from None
                self.usage.add(retries=1)
                time.sleep(self.backoff(attempt, retry_after(err)))
        raise AssertionError("unreachable")

    def backoff(self, attempt: int, asked: float | None) -> float:
        """Exponential with jitter (so parallel workers do not retry in step); at least what the server asked."""
        if asked is not None:
            return asked * random.uniform(1.0, 1.1)
        return min(self.cfg.backoff_max, self.cfg.backoff_base * 2 ** attempt) * random.uniform(0.5, 1.0)

    def run_all(self, jobs: list[tuple[list[dict], int]], desc: str) -> list[Reply | RequestFailed]:
        """Answer (messages, max_tokens) jobs concurrently, in the jobs' order, with a progress bar."""
        from tqdm.auto import tqdm

        results: list = [None] * len(jobs)
        bar = tqdm(total=len(jobs), desc=desc, unit="req")
        pool = ThreadPoolExecutor(max_workers=self.cfg.max_concurrency)
        futures = {pool.submit(self.complete, *job): i for i, job in enumerate(jobs)}
        try:
            for future in as_completed(futures):
                results[futures[future]] = self._result(future)
                bar.update(1)
                bar.set_postfix_str(f"failed {self.usage.failures}, tokens "
                                    f"{self.usage.input_tokens + self.usage.output_tokens}, "
                                    f"cost {self.usage.cost:.4f}")
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            bar.close()
            print(f"stopped: {len(self.cache)} answers are in the cache {self.cache.path}; "
                  "the same command sends only the rest")
            raise
        pool.shutdown()
        bar.close()
        return results

    def _result(self, future) -> Reply | RequestFailed:
        try:
            return future.result()
        except RequestFailed as err:
            self.usage.add(failures=1)
            return err

"""The endpoint client against a scripted HTTP server on localhost: faults, retries, limits, cache, cost.
No mocking: the openai package talks HTTP to a real socket."""


import pytest

from lora_llava.endpoint.client import Endpoint, EndpointError, RequestFailed
from tests.conftest import smoke_config
from tests.servers import drop, reply, scripted_server, stall, status

MESSAGES = [{"role": "user", "content": "What is in the image?"}]


def endpoint(server, tmp_path, *overrides):
    cfg = smoke_config(f"endpoint.base_url={server.url}", "endpoint.api_key_env=null", "endpoint.model=scripted",
                       "endpoint.backoff_base=0.01", "endpoint.timeout=5", *overrides)
    return Endpoint(cfg.endpoint, tmp_path / "cache.jsonl")


def script_of(*first, then=None):
    """The listed actions for the first requests, then `then` (a plain reply by default)."""
    def script(body, number):
        return first[number - 1] if number <= len(first) else (then or reply("a red circle", 12, 4))
    return script


@pytest.mark.parametrize("faults", [
    [status(500), status(503)],
    [status(429, {"Retry-After": "0"})],
    [drop()],
    [stall(3.0)],
], ids=["5xx", "429", "dropped-connection", "stall-past-timeout"])
def test_transient_faults_are_retried(tmp_path, faults):
    with scripted_server(script_of(*faults)) as server:
        client = endpoint(server, tmp_path, "endpoint.timeout=1")
        answer = client.complete(MESSAGES, 32)
    assert answer.text == "a red circle"
    assert server.count == len(faults) + 1
    assert client.usage.retries == len(faults) and client.usage.answered == 1


def test_retry_after_is_honoured(tmp_path):
    with scripted_server(script_of(status(429, {"Retry-After": "1"}))) as server:
        endpoint(server, tmp_path).complete(MESSAGES, 32)
    first, second = server.seen
    assert second.at - first.at >= 1.0  # backoff_base is 0.01 s: only Retry-After explains the wait


def test_persistent_failure_is_reported_not_cached(tmp_path):
    with scripted_server(script_of(then=status(500))) as server:
        client = endpoint(server, tmp_path, "endpoint.max_retries=2")
        results = client.run_all([(MESSAGES, 32)], "test")
        assert isinstance(results[0], RequestFailed) and "HTTP 500" in str(results[0])
        assert server.count == 3 and client.usage.failures == 1
        endpoint(server, tmp_path, "endpoint.max_retries=0").run_all([(MESSAGES, 32)], "test")
        assert server.count == 4  # a failure is not cached: the rerun asks again


def test_malformed_request_is_not_retried(tmp_path):
    with scripted_server(script_of(then=status(400))) as server:
        results = endpoint(server, tmp_path).run_all([(MESSAGES, 32)], "test")
    assert isinstance(results[0], RequestFailed) and server.count == 1


def test_refused_key_stops_the_stage(tmp_path):
    with scripted_server(script_of(then=status(401))) as server, pytest.raises(EndpointError, match="401"):
        endpoint(server, tmp_path).run_all([(MESSAGES, 32)] * 3, "test")


def test_concurrency_is_bounded_and_order_kept(tmp_path):
    def script(body, number):
        return stall(0.3, reply(body["messages"][0]["content"].upper()))

    jobs = [([{"role": "user", "content": f"question {i}"}], 8) for i in range(6)]
    with scripted_server(script) as server:
        results = endpoint(server, tmp_path, "endpoint.max_concurrency=2").run_all(jobs, "test")
    assert server.max_in_flight == 2
    assert [r.text for r in results] == [f"QUESTION {i}" for i in range(6)]


def test_requests_per_minute(tmp_path):
    jobs = [([{"role": "user", "content": f"q{i}"}], 8) for i in range(4)]
    with scripted_server(script_of()) as server:
        endpoint(server, tmp_path, "endpoint.requests_per_minute=300", "endpoint.max_concurrency=4").run_all(
            jobs, "test")
    starts = sorted(s.at for s in server.seen)
    # 300 a minute: starts 0.2 s apart on the client, 0.6 s from first to last; arrivals at the server jitter
    # with the machine's load, so only the span is checked, with room for that jitter (unlimited: ~0 s).
    assert starts[-1] - starts[0] >= 0.4


def test_cache_answers_repeats_and_costs_once(tmp_path):
    prices = ("endpoint.price_per_1k_input=1.0", "endpoint.price_per_1k_output=2.0")
    with scripted_server(script_of()) as server:
        first = endpoint(server, tmp_path, *prices)
        first.run_all([(MESSAGES, 32), (MESSAGES, 64)], "test")
        assert first.usage.cost == pytest.approx((2 * 12 * 1.0 + 2 * 4 * 2.0) / 1000)
        again = endpoint(server, tmp_path, *prices)
        results = again.run_all([(MESSAGES, 32), (MESSAGES, 64)], "test")
    assert server.count == 2  # max_tokens is part of the key: two requests, each sent once
    assert all(r.cached for r in results) and again.usage.cost == 0 and again.usage.cached == 2


def test_streamed_answers_match(tmp_path):
    with scripted_server(script_of(then=reply("a blue square in the top left", 9, 7))) as server:
        streamed = endpoint(server, tmp_path, "endpoint.stream=true").complete(MESSAGES, 32)
    assert server.seen[0].body["stream"] is True
    assert (streamed.text, streamed.input_tokens, streamed.output_tokens) == ("a blue square in the top left", 9, 7)


def test_torn_cache_line_is_sent_again(tmp_path):
    with scripted_server(script_of()) as server:
        endpoint(server, tmp_path).complete(MESSAGES, 32)
        with open(tmp_path / "cache.jsonl", "a") as f:
            f.write('{"key": "abc", "text": "half')  # a run killed while writing
        client = endpoint(server, tmp_path)
        client.complete([{"role": "user", "content": "another"}], 32)
        assert endpoint(server, tmp_path).complete([{"role": "user", "content": "another"}], 32).cached
    assert server.count == 2

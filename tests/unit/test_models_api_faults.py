"""ApiBackend against a scripted local endpoint: retries, timeouts, malformed bodies, secrets.

Every call must end in a result or a recorded error (none lost), after a known number of
attempts. Backoff delays are tiny here; the policy's maths is checked separately.
"""

from __future__ import annotations

import math
import random

import pytest

from cai.models.api import ApiBackend, RetryPolicy, parse_retry_after, public_url
from cai.models.base import GenerationParams
from tests.servers import Reply, ScriptedServer, completion, error_body

FAST = RetryPolicy(max_retries=4, backoff_base=0.01, backoff_max=0.05)
CONV = [{"role": "user", "content": "hello"}]
SECRET = "sk-test-DO-NOT-LEAK-0123456789"


def backend(server: ScriptedServer, *, timeout: float = 5.0, retry: RetryPolicy = FAST,
            sleeps: list[float] | None = None, concurrency: int = 4) -> ApiBackend:
    import time

    def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)
        time.sleep(seconds)

    return ApiBackend("scripted", api_key=SECRET, base_url=server.base_url, timeout=timeout,
                      retry=retry, concurrency=concurrency, sleep=sleep)


def test_429_honours_retry_after(scripted_server: ScriptedServer) -> None:
    scripted_server.script = [
        Reply(status=429, body=error_body(429), headers={"Retry-After": "0.2"}),
        Reply(body=completion("fine")),
    ]
    sleeps: list[float] = []
    out = backend(scripted_server, sleeps=sleeps).generate([CONV], GenerationParams())
    assert out[0].texts == ["fine"] and out[0].error is None
    assert scripted_server.attempts == 2 and sleeps == [0.2]


def test_500s_then_success(scripted_server: ScriptedServer) -> None:
    scripted_server.script = [Reply(status=500, body=error_body(500)),
                              Reply(status=503, body=error_body(503)),
                              Reply(body=completion("third time"))]
    out = backend(scripted_server).generate([CONV], GenerationParams())
    assert out[0].texts == ["third time"] and scripted_server.attempts == 3


def test_hang_past_timeout_is_retried(scripted_server: ScriptedServer) -> None:
    # The hang lasts until the server stops, and the timeout leaves a loaded machine ample time
    # for the second, prompt reply: the outcome does not depend on how fast this machine is.
    scripted_server.script = [Reply(kind="hang", seconds=600.0, body=completion("late")),
                              Reply(body=completion("on time"))]
    out = backend(scripted_server, timeout=2.0).generate([CONV], GenerationParams())
    assert out[0].texts == ["on time"] and scripted_server.attempts == 2


def test_malformed_json_is_retried(scripted_server: ScriptedServer) -> None:
    scripted_server.script = [Reply(kind="raw", text='{"choices": [ oops'),
                              Reply(body={"unexpected": True}),
                              Reply(body=completion("parsed"))]
    out = backend(scripted_server).generate([CONV], GenerationParams())
    assert out[0].texts == ["parsed"] and scripted_server.attempts == 3


def test_gives_up_with_a_recorded_error(scripted_server: ScriptedServer) -> None:
    scripted_server.script = [Reply(status=500, body=error_body(500))]
    retry = RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.02)
    gen = backend(scripted_server, retry=retry).generate([CONV], GenerationParams())[0]
    assert gen.texts == [] and "gave up after 3 attempts" in (gen.error or "")
    assert scripted_server.attempts == 3
    scores = backend(scripted_server, retry=retry).option_probs([CONV], ["A", "B"])[0]
    assert scores.error and scores.probs == {} and scripted_server.attempts == 6


def test_client_errors_are_not_retried(scripted_server: ScriptedServer) -> None:
    scripted_server.script = [Reply(status=400, body=error_body(400, "bad request"))]
    gen = backend(scripted_server).generate([CONV], GenerationParams())[0]
    assert gen.error and "attempts: 1" in gen.error and scripted_server.attempts == 1


def test_mixed_faults_under_concurrency_lose_nothing(scripted_server: ScriptedServer) -> None:
    faults = [Reply(status=429, body=error_body(429), headers={"Retry-After": "0"}),
              Reply(status=500, body=error_body(500)),
              Reply(kind="raw", text="not json"),
              Reply(status=502, body=error_body(502))]
    scripted_server.script = [*faults, Reply(kind="echo")]
    convs = [[{"role": "user", "content": f"prompt {i}"}] for i in range(12)]
    out = backend(scripted_server, concurrency=6).generate(convs, GenerationParams())
    assert [g.texts for g in out] == [[f"prompt {i}"] for i in range(12)]  # order kept
    assert scripted_server.attempts == 12 + len(faults)


def test_n_samples_loop_when_server_ignores_n(scripted_server: ScriptedServer) -> None:
    scripted_server.script = [Reply(body=completion("one"))]  # always a single choice
    gen = backend(scripted_server).generate([CONV], GenerationParams(n=3, seed=10))[0]
    assert gen.texts == ["one"] * 3 and gen.n_tokens == 9
    seeds = [r.body["seed"] for r in scripted_server.requests]
    assert seeds == [10, 11, 12]
    assert scripted_server.requests[0].body["n"] == 3


def test_min_new_tokens_reaches_both_kinds_of_llama_server(scripted_server: ScriptedServer) -> None:
    # llama-cpp-python's server reads `min_tokens`; llama.cpp's own llama-server drops it and
    # honours only `ignore_eos`, which must not be sent when EOS may still end the answer.
    api = backend(scripted_server)
    params = GenerationParams(max_new_tokens=8, temperature=0.0)
    api.generate([CONV], params, min_new_tokens=8)
    api.generate([CONV], params, min_new_tokens=4)
    api.generate([CONV], params)
    sent = [r.body for r in scripted_server.requests]
    assert (sent[0]["min_tokens"], sent[0]["ignore_eos"]) == (8, True)
    assert sent[1]["min_tokens"] == 4 and "ignore_eos" not in sent[1]
    assert "min_tokens" not in sent[2] and "ignore_eos" not in sent[2]


def test_option_probs_from_top_logprobs(scripted_server: ScriptedServer) -> None:
    top = [(" A", math.log(0.6)), ("(B", math.log(0.2)), ("The", math.log(0.1))]
    scripted_server.script = [Reply(body=completion("A", top_logprobs=top))]
    s = backend(scripted_server).option_probs([CONV], ["A", "B"])[0]
    assert s.path == "logprobs" and s.error is None
    assert s.probs == pytest.approx({"A": 0.75, "B": 0.25}) and s.mass == pytest.approx(0.8)
    sent = scripted_server.requests[0].body
    assert sent["logprobs"] is True and sent["top_logprobs"] == 20 and sent["max_tokens"] == 1


def test_option_probs_text_fallback(scripted_server: ScriptedServer) -> None:
    scripted_server.script = [Reply(body=completion("The")),  # no logprobs in the answer
                              Reply(body=completion("The answer is (B)."))]
    s = backend(scripted_server).option_probs([CONV], ["A", "B"])[0]
    assert s.path == "text" and s.probs == {"A": 0.0, "B": 1.0} and s.raw == "The answer is (B)."
    assert scripted_server.attempts == 2


def test_key_never_in_describe_or_errors(scripted_server: ScriptedServer) -> None:
    # A hostile server that echoes the Authorization header back in its error body.
    scripted_server.script = [
        Reply(status=401, body=error_body(401, f"invalid key: Bearer {SECRET}"))
    ]
    b = backend(scripted_server)
    gen = b.generate([CONV], GenerationParams())[0]
    scores = b.option_probs([CONV], ["A", "B"])[0]
    assert gen.error and scores.error
    assert SECRET in scripted_server.requests[0].headers.get("authorization", "")
    for text in (gen.error, scores.error, repr(b.describe()), repr(gen), repr(scores)):
        assert SECRET not in text


def test_retry_policy_delays() -> None:
    p = RetryPolicy(max_retries=5, backoff_base=1.0, backoff_max=5.0, retry_after_max=30)
    rng = random.Random(0)
    for attempt, cap in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 5.0), (6, 5.0)]:
        d = p.delay(attempt, None, rng)
        assert cap / 2 <= d <= cap
    assert p.delay(0, 7.0, rng) == 7.0 and p.delay(0, 1e6, rng) == 30


def test_retry_after_parsing_and_public_url() -> None:
    assert parse_retry_after("2.5") == 2.5 and parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert public_url("https://user:pw@host:8443/v1?key=x") == "https://host:8443/v1"

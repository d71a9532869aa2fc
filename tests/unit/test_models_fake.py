"""The scripted fake backend other stages test against: deterministic and documented."""

from __future__ import annotations

import time

import pytest

from cai.models.base import GenerationParams
from cai.models.fake import FakeBackend

CONV = [{"role": "user", "content": "How do I bake bread?"}]


def test_generation_is_deterministic_and_seeded() -> None:
    a, b = FakeBackend(), FakeBackend()
    p = GenerationParams(n=3, seed=1)
    first, again = a.generate([CONV], p)[0], b.generate([CONV], p)[0]
    assert first == again and len(first.texts) == 3
    assert len(set(first.texts)) == 3  # sample index matters
    assert a.generate([CONV], GenerationParams(n=3, seed=2))[0].texts != first.texts
    assert all(t.startswith("Response: ") and t.endswith(".") for t in first.texts)
    assert first.n_tokens > 0 and first.error is None


@pytest.mark.parametrize(
    ("message", "tag"),
    [("Critique the answer above.", "Critique: "), ("Please critique it", "Critique: "),
     ("Now revise the answer.", "Revision: "), ("Rewrite it to be harmless.", "Revision: ")],
)
def test_generation_echoes_the_step(message: str, tag: str) -> None:
    conv = [*CONV, {"role": "assistant", "content": "x"}, {"role": "user", "content": message}]
    assert FakeBackend().generate([conv], GenerationParams())[0].texts[0].startswith(tag)


def test_stop_strings_truncate() -> None:
    text = FakeBackend().generate([CONV], GenerationParams(stop=(" ",)))[0].texts[0]
    assert " " not in text


def test_option_probs_deterministic_and_normalised() -> None:
    convs = [CONV, [{"role": "user", "content": "Which is better, (A) or (B)?"}]]
    a = FakeBackend().option_probs(convs, ["A", "B"])
    assert a == FakeBackend().option_probs(convs, ["A", "B"])
    for s in a:
        assert abs(sum(s.probs.values()) - 1) < 1e-9 and 0 < s.mass <= 1 and s.path == "logprobs"


def test_always_a() -> None:
    scores = FakeBackend("always-a").option_probs([CONV, CONV], ["A", "B"])
    assert all(s.probs == {"A": 0.9, "B": pytest.approx(0.1)} for s in scores)


def test_slow_sleeps_per_call() -> None:
    backend = FakeBackend("slow")
    start = time.perf_counter()
    backend.generate([CONV, CONV], GenerationParams())
    assert time.perf_counter() - start >= 0.05 and backend.calls == 1


def test_unknown_mode() -> None:
    with pytest.raises(ValueError, match="unknown fake mode"):
        FakeBackend("bogus")

"""The scripted fake backend other stages test against: deterministic and documented."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cai.constitution.load import load_constitution
from cai.io.pairs import Pair
from cai.models import fake
from cai.models.base import GenerationParams
from cai.models.fake import FakeBackend
from cai.stages.judging import judge_pairs
from cai.stages.messages import cot_answer_messages, critique_messages, revision_messages
from cai.stages.settings import JudgeSettings

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
    [
        ("Critique the answer above.", "Critique: "),
        ("Please critique it", "Critique: "),
        ("Now revise the answer.", "Revision: "),
        ("Rewrite it to be harmless.", "Revision: "),
    ],
)
def test_generation_echoes_the_step(message: str, tag: str) -> None:
    conv = [*CONV, {"role": "assistant", "content": "x"}, {"role": "user", "content": message}]
    assert FakeBackend().generate([conv], GenerationParams())[0].texts[0].startswith(tag)


HARMLESS = load_constitution("harmless")
@pytest.mark.parametrize("principle", [v.id for v in HARMLESS.critique_principles])
def test_the_stages_real_critique_and_revision_prompts_get_the_step_tag(principle: str) -> None:
    """The stage tests read the fake's tags off cai's own prompts; each shipped principle's must be recognised."""
    p = HARMLESS.critique_principle(principle)
    critique = critique_messages(HARMLESS, CONV, "An answer.", p)
    revision = revision_messages(HARMLESS, CONV, "An answer.", p, "A critique.")
    critique_out, revision_out = (g.texts[0] for g in FakeBackend().generate([critique, revision], GenerationParams()))
    assert critique_out.startswith("Critique: ")
    assert revision_out.startswith("Revision: ")


def test_a_judge_prefix_is_continued_without_a_tag() -> None:
    """The CoT judge path ends with an assistant prefix; the fake continues it, as a model would."""
    conv = cot_answer_messages([*CONV, {"role": "user", "content": "Which is better?"}], "B is kinder.")
    [text] = FakeBackend().generate([conv], GenerationParams())[0].texts
    assert text.startswith(" ") and not text.lstrip().startswith(("Critique:", "Revision:", "Response:"))


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
    # What the judging core makes of it: asked in both orders, a position-only judge ties.
    [res] = judge_pairs(
        HARMLESS, FakeBackend("always-a"), [Pair("p0", CONV, "good", "bad")], JudgeSettings(orders="both"), seed=0
    )
    assert res["p_a"] == pytest.approx(0.5) and all(x["consistent"] is False for x in res["principles"])


def test_slow_sleeps_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    # Only this module's clock is replaced: the test counts the pauses instead of timing them.
    monkeypatch.setattr(fake, "time", SimpleNamespace(sleep=slept.append))
    backend = FakeBackend("slow")
    backend.generate([CONV, CONV], GenerationParams())
    assert slept == [0.05] and backend.calls == 1
    FakeBackend("default").generate([CONV], GenerationParams())
    assert slept == [0.05]


def test_unknown_mode() -> None:
    with pytest.raises(ValueError, match="unknown fake mode"):
        FakeBackend("bogus")

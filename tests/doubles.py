"""Scripted backends for tests: one protocol-complete double, told what to answer by functions.

`ScriptedBackend` implements every method of `cai.models.base.Backend`; a test gives it the
behaviour it needs (`reply` for generation, `p_first` for multiple-choice questions) and any
other call fails the test, so a stage that asks a model something unexpected is caught.

A judge double must know which reply it is shown as (A) and which as (B), and under which
question. It learns where they sit from the comparison template itself (rendered with markers),
not from a copy of the template's wording, so rewording a template does not break the tests.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

from cai.constitution.load import load_constitution
from cai.constitution.model import Constitution
from cai.io.store import content_hash
from cai.models.base import Conversation, Generation, GenerationParams, OptionScores, SequenceScore

# A reply: the text of sample `i` for a conversation, or a `Generation` (e.g. one with an error).
Reply = Callable[[Conversation, GenerationParams, int], "str | Generation"]
# P(the reply shown first is better), from (text shown as A, text shown as B, the question);
# None: the judge gave no probabilities.
PFirst = Callable[[str, str, str], float | None]

_A, _B, _Q = "\x01A\x01", "\x02B\x02", "\x03Q\x03"


@functools.cache
def _harmless() -> Constitution:
    return load_constitution("harmless")


def _pattern(c: Constitution, template: str) -> re.Pattern[str]:
    """Where (A), (B) and the question sit in the last lines of a rendered comparison prompt."""
    text = c.renderer.render(template, conversation=[], response_a=_A, response_b=_B, question=_Q)
    assert text.index(_A) < text.index(_B) < text.index(_Q), f"{template}: expected (A), (B), then the question"
    tail = text[text.rindex("\n", 0, text.index(_A)) + 1 :]  # from the line that shows (A) on
    escaped = re.escape(tail)
    for marker in (_A, _B, _Q):
        escaped = escaped.replace(re.escape(marker), "(.*?)", 1)
    return re.compile(escaped + r"\Z", re.S)


_PATTERNS: dict[str, tuple[re.Pattern[str], ...]] = {}  # by constitution fingerprint: render once


def _patterns_of(c: Constitution) -> tuple[re.Pattern[str], ...]:
    key = c.fingerprint()
    if key not in _PATTERNS:
        _PATTERNS[key] = tuple(_pattern(c, t) for t in (c.spec.templates.comparison, c.spec.templates.comparison_cot))
    return _PATTERNS[key]


def shown(conv: Conversation, c: Constitution | None = None) -> tuple[str, str, str]:
    """(text shown as A, text shown as B, the principle's question) of the live question."""
    c = c or _harmless()
    user = next(m for m in reversed(conv) if m["role"] == "user")["content"]
    for pattern in _patterns_of(c):
        m = pattern.search(user)
        if m:
            return m.group(1), m.group(2), m.group(3)
    raise AssertionError(f"not a comparison question of this constitution's templates: {user[-300:]!r}")


class ScriptedBackend:
    """Every `Backend` method; what it answers comes from the functions it is given."""

    def __init__(
        self,
        spec: str = "scripted",
        *,
        reply: Reply | None = None,
        p_first: PFirst | None = None,
        mass: float = 0.8,
        tokens: int | None = None,
        constitution: Constitution | None = None,
    ):
        self.spec = spec
        self.reply = reply
        self.p_first = p_first
        self.mass = mass
        self.tokens = tokens  # per conversation; None: the words of its texts
        self.constitution = constitution
        self.calls: list[tuple[str, list[Conversation]]] = []
        self.params: list[GenerationParams] = []

    def generate(self, conversations: Sequence[Conversation], params: GenerationParams) -> list[Generation]:
        if self.reply is None:
            raise AssertionError(f"{self.spec} is never asked to generate")
        self.calls.append(("generate", [list(c) for c in conversations]))
        self.params.append(params)
        out = []
        for conv in conversations:
            texts = [self.reply(conv, params, i) for i in range(params.n)]
            failed = next((t for t in texts if isinstance(t, Generation)), None)
            if failed is not None:
                out.append(failed)
            else:
                words = sum(len(str(t).split()) for t in texts)
                out.append(Generation([str(t) for t in texts], words if self.tokens is None else self.tokens))
        return out

    def option_probs(self, conversations: Sequence[Conversation], options: Sequence[str]) -> list[OptionScores]:
        if self.p_first is None:
            raise AssertionError(f"{self.spec} is never asked to judge")
        assert tuple(options) == ("A", "B")
        self.calls.append(("option_probs", [list(c) for c in conversations]))
        out = []
        for conv in conversations:
            p = self.p_first(*shown(conv, self.constitution))
            if p is None:
                out.append(OptionScores({}, 0.0, path="text", raw="I cannot decide.", error="no option in the answer"))
            else:
                out.append(OptionScores({"A": p, "B": 1 - p}, self.mass, raw="A" if p >= 0.5 else "B"))
        return out

    def sequence_logprobs(self, requests: Sequence[tuple[Conversation, str]]) -> list[SequenceScore]:
        raise AssertionError(f"{self.spec} is never asked to score replies")

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec}

    def close(self) -> None:
        pass


def ScriptedJudge(
    p_first: PFirst, mass: float = 0.8, reasoning: str = "B is kinder.", spec: str = "scripted"
) -> ScriptedBackend:
    """A multiple-choice judge whose P(A) is `p_first(text_a, text_b, question)`; asked to
    reason first (CoT), it writes `reasoning`."""
    return ScriptedBackend(spec, reply=lambda conv, params, i: reasoning, p_first=p_first, mass=mass, tokens=4)


def ScriptedPolicy(identical: bool = False, spec: str = "scripted-policy") -> ScriptedBackend:
    """Deterministic samples: text i for a conversation depends on the conversation and seed
    (and not on i when `identical`)."""

    def reply(conv: Conversation, params: GenerationParams, i: int) -> str:
        return f"reply {content_hash(conv, params.seed, length=6)} {0 if identical else i}"

    return ScriptedBackend(spec, reply=reply, tokens=5)


def canned(spec: str, text: str, fails: Callable[[Conversation], bool] = lambda conv: False) -> ScriptedBackend:
    """One fixed text for every prompt; a generation error for the prompts `fails` picks."""
    return ScriptedBackend(spec, reply=lambda conv, params, i: Generation(error="boom") if fails(conv) else text)

"""A scripted, deterministic backend for tests of the stages (no model, no network).

Spec strings: ``fake`` (hash-derived sentences and probabilities), ``fake:always-a`` (the first
option always gets 0.9), ``fake:slow`` (like ``fake`` but sleeps 0.05 s per call, so that
kill/resume tests have time to kill). Everything is a pure function of the inputs, so CLI
subprocess tests can compare runs byte for byte.

What ``generate`` returns, by the last user message (case-insensitive):
  * contains "critique" → ``"Critique: <sentence>"``
  * contains "revise" or "rewrite" → ``"Revision: <sentence>"``
  * otherwise → ``"Response: <sentence>"``
If the conversation ends with an assistant prefix, the text continues it (no tag).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

from cai.models.base import Conversation, Generation, GenerationParams, OptionScores, SequenceScore

MODES = ("default", "always-a", "slow")

# Vocabulary of the fake sentences (split at use: ruff prefers literals to split constants).
_VOCAB = (
    "the answer considers safety and honesty while staying helpful to the person asking "
    "a careful response explains risks offers alternatives and avoids harmful detail "
    "it respects privacy acknowledges uncertainty and suggests asking an expert"
)


def _digest(*parts: Any) -> bytes:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).digest()


def _sentence(seed_bytes: bytes, n_words: int) -> str:
    vocab = _VOCAB.split(" ")
    words = [vocab[seed_bytes[i % len(seed_bytes)] % len(vocab)] for i in range(n_words)]
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def _tag(conversation: Conversation) -> str:
    last_user = next((m["content"] for m in reversed(conversation) if m["role"] == "user"), "")
    lowered = last_user.lower()
    if "critique" in lowered:
        return "Critique: "
    # Revision requests are principle text written by people: match the words they use for it.
    if any(word in lowered for word in ("revis", "rewrit", "new version")):
        return "Revision: "
    return "Response: "


class FakeBackend:
    """Deterministic stand-in for a model; see the module docstring for its script."""

    def __init__(self, mode: str = "default") -> None:
        if mode not in MODES:
            raise ValueError(f"unknown fake mode {mode!r}; choose one of {', '.join(MODES)}")
        self.mode = mode
        self.spec = "fake" if mode == "default" else f"fake:{mode}"
        self.calls = 0  # per instance, so tests can count calls

    def _pause(self) -> None:
        self.calls += 1
        if self.mode == "slow":
            time.sleep(0.05)

    def generate(self, conversations: Sequence[Conversation], params: GenerationParams) -> list[Generation]:
        self._pause()
        results = []
        for conv in conversations:
            texts = []
            continuing = bool(conv) and conv[-1]["role"] == "assistant"
            for i in range(params.n):
                d = _digest(conv, params.seed, i)
                n_words = 6 + d[0] % 10
                body = _sentence(d, n_words)
                text = (" " + body.lower()) if continuing else _tag(conv) + body
                for stop in params.stop:
                    cut = text.find(stop)
                    if cut >= 0:
                        text = text[:cut]
                texts.append(text)
            results.append(Generation(texts=texts, n_tokens=sum(len(t.split()) for t in texts)))
        return results

    def option_probs(self, conversations: Sequence[Conversation], options: Sequence[str]) -> list[OptionScores]:
        self._pause()
        out = []
        for conv in conversations:
            if not options:
                out.append(OptionScores.failed("no options given"))
                continue
            if self.mode == "always-a":
                rest = 0.1 / max(len(options) - 1, 1)
                probs = {o: (0.9 if i == 0 else rest) for i, o in enumerate(options)}
                if len(options) == 1:
                    probs = {options[0]: 1.0}
            else:
                d = _digest(conv, list(options))
                weights = [1 + d[i % len(d)] for i in range(len(options))]
                total = sum(weights)
                probs = {o: w / total for o, w in zip(options, weights, strict=True)}
            mass = 0.5 + (_digest(conv)[0] / 255) * 0.5
            out.append(OptionScores(probs=probs, mass=mass, path="logprobs"))
        return out

    def sequence_logprobs(self, requests: Sequence[tuple[Conversation, str]]) -> list[SequenceScore]:
        """Per word of the reply, a hash-derived log-probability in [-4, -1) of (context, word)."""
        self._pause()
        out = []
        for conv, reply in requests:
            words = reply.split() or [""]
            total = sum(-1.0 - 3.0 * _digest(conv, w)[0] / 256 for w in words)
            out.append(SequenceScore(total, n_tokens=len(words)))
        return out

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "backend": "fake", "mode": self.mode}

    def close(self) -> None:
        pass

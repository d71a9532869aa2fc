"""The one interface every stage uses to talk to a model, local or remote.

Stages only ever see `Backend`: batched chat generation, option probabilities and the
log-probability of given replies. A
conversation is a list of ``{"role": ..., "content": ...}`` messages. When the last message
has role ``assistant`` it is a *prefix to continue* (used for chain-of-thought judging, where
the answer probability is read after the judge's own reasoning).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

# Re-exported: every backend speaks them.
from cai.chat import Conversation as Conversation
from cai.chat import Generation as Generation
from cai.chat import Message as Message


class ModelSpecError(ValueError):
    """A model spec that cannot be resolved; the message says what to do about it.

    Here rather than in `cai.models.spec` so that the modules `spec` builds backends from
    (`embedded`) can raise it without importing `spec` back.
    """


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings; recorded verbatim on every record so a run can be reproduced."""

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int = 0

    def as_record(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass
class OptionScores:
    """The judge's answer to one multiple-choice question.

    ``probs`` are normalised over the options (they sum to 1); ``mass`` is the raw probability
    the options received before normalising, so a judge that hardly considers A/B is visible.
    ``path`` says how they were obtained: ``logprobs`` (token probabilities) or ``text``
    (parsed from a sampled answer when the endpoint gives no log-probabilities).
    """

    probs: dict[str, float]
    mass: float
    path: str = "logprobs"
    raw: str | None = None
    error: str | None = None

    @classmethod
    def failed(cls, error: str, *, path: str = "logprobs", raw: str | None = None) -> OptionScores:
        """No answer: no probabilities, the reason kept (a parse failure is a value, not None)."""
        return cls(probs={}, mass=0.0, path=path, raw=raw, error=error)


@dataclass
class SequenceScore:
    """Log-probability of a given assistant reply after a conversation (likelihood contrast).

    ``logprob`` sums the reply's tokens, the end-of-turn token included (so "the reply ends
    here" is part of its score); ``n_tokens`` counts them, for length-normalised scores.
    """

    logprob: float | None
    n_tokens: int = 0
    error: str | None = None


@runtime_checkable
class Backend(Protocol):
    spec: str

    def generate(self, conversations: Sequence[Conversation], params: GenerationParams) -> list[Generation]:
        """Return one `Generation` (params.n texts) per conversation, in order."""
        ...

    def option_probs(self, conversations: Sequence[Conversation], options: Sequence[str]) -> list[OptionScores]:
        """Probability of each option label (e.g. "A", "B") as the next answer token."""
        ...

    def sequence_logprobs(self, requests: Sequence[tuple[Conversation, str]]) -> list[SequenceScore]:
        """log p(reply | conversation) for each (conversation ending with a user or system
        turn, assistant reply); a backend that cannot score given text says so per request."""
        ...

    def describe(self) -> dict[str, Any]:
        """Provenance for records: spec, dtype, device, endpoint host. Never a secret."""
        ...

    def close(self) -> None: ...

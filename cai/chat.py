"""The plain data a model reads and writes: chat messages and the samples drawn for them.

Below every layer, so that files of conversations and pairs (`cai.io`) and the backends
(`cai.models`) share them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Message = dict[str, str]
Conversation = list[Message]


@dataclass
class Generation:
    """The n samples for one conversation, or the error that prevented them.

    A failed request is a value, not an exception, so one bad call never loses a batch.
    """

    texts: list[str] = field(default_factory=list)
    n_tokens: int = 0
    error: str | None = None

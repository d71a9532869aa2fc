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


ROLES = ("system", "user", "assistant")


def turn_problem(turn: object) -> tuple[str, str] | None:
    """What is wrong with one chat turn read from a file, as (field, message), or None.

    A turn is a mapping with a `role` of system, user or assistant and a `content` of non-blank
    text. Anything else is refused rather than coerced: a null content would otherwise become
    the text "None", and a missing role the role "None"."""
    if not isinstance(turn, dict):
        return "", "each turn must be an object with role and content"
    role = turn.get("role")
    if role is None:
        return "role", "missing (system, user or assistant)"
    if not isinstance(role, str) or role not in ROLES:
        return "role", f"{role!r} is not a role (system, user or assistant)"
    content = turn.get("content")
    if not isinstance(content, str):
        return "content", "missing (every turn needs text)" if content is None else "not text (every turn needs text)"
    if not content.strip():
        return "content", "empty (every turn needs text)"
    return None

"""What an OpenAI-compatible endpoint must look like before cai believes it.

Two checks, both about not trusting what comes from outside:

- `base_url_problem`: an endpoint URL that cannot work (no http(s) scheme, no host, a port out of
  range, whitespace or control characters) is refused when the spec is opened, as one line,
  instead of surfacing later as a traceback or as the same connection error on every record.
- `response_problem`: the client library builds response objects without validating them, so a
  body that is valid JSON of the wrong shape (``message: null``, ``content: 42``, a log-probability
  that is null, a string or above 0, ``usage`` as a string) would reach the stages as nonsense.
  The backend checks each response and treats a bad one as a malformed response: retried, then
  the record's one-line error. A log-probability must be a finite number ≤ 0: anything else is
  not a probability, and summing such values gave option masses far above 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from cai.redact import redact_url


def base_url_problem(url: str) -> str | None:
    """Why `url` cannot be an endpoint, or None. The message never repeats the URL's credentials."""
    shown = repr(redact_url(url))[:200]
    if not url.strip():
        return "empty endpoint URL"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return f"{shown}: whitespace or control characters in the endpoint URL"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        return f"{shown}: not a usable URL ({e})"
    if parts.scheme.lower() not in ("http", "https"):
        return f"{shown}: the endpoint URL must start with http:// or https://"
    if not parts.hostname:
        return f"{shown}: no host in the endpoint URL"
    if port is not None and port == 0:
        return f"{shown}: port 0 is not a port to connect to"
    return None


def _logprob_problem(value: Any, where: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{where}.logprob is {type(value).__name__}, not a number"
    if not math.isfinite(value) or value > 0:
        return f"{where}.logprob is {value!r}; a log-probability is finite and at most 0"
    return None


def _token_problem(entry: Any, where: str) -> str | None:
    if not isinstance(getattr(entry, "token", None), str):
        return f"{where}.token is not a string"
    return _logprob_problem(getattr(entry, "logprob", None), where)


def _each_problem(items: Any, where: str, check: Callable[[Any, str], str | None]) -> str | None:
    """The first problem `check` finds in a list of entries (absent: none), each named by its index."""
    if items is None:
        return None
    if not isinstance(items, list):
        return f"{where} is not a list"
    for i, item in enumerate(items):
        problem = check(item, f"{where}[{i}]")
        if problem:
            return problem
    return None


def _entry_problem(entry: Any, where: str) -> str | None:
    """One answer token and its alternatives."""
    return _token_problem(entry, where) or _each_problem(
        getattr(entry, "top_logprobs", None), f"{where}.top_logprobs", _token_problem
    )


def _logprobs_problem(logprobs: Any, where: str) -> str | None:
    if logprobs is None:
        return None
    return _each_problem(getattr(logprobs, "content", None), f"{where}.logprobs.content", _entry_problem)


def _usage_problem(usage: Any) -> str | None:
    if usage is None:
        return None
    if isinstance(usage, str | int | float | list | bool):
        return f"usage is {type(usage).__name__}, not an object"
    tokens = getattr(usage, "completion_tokens", None)
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0):
        return f"usage.completion_tokens is {tokens!r}, not a count"
    return None


def response_problem(resp: Any) -> str | None:
    """What is wrong with a chat-completions response, or None when every part cai reads has the
    type it must have."""
    choices = getattr(resp, "choices", None)
    if not isinstance(choices, list) or not choices:
        return f"no choices in response: {str(resp)[:200]!r}"
    for i, choice in enumerate(choices):
        where = f"choices[{i}]"
        message = getattr(choice, "message", None)
        if message is None or isinstance(message, str | int | float | list | bool):
            return f"{where}.message is {type(message).__name__}, not a message"
        content = getattr(message, "content", None)
        if content is not None and not isinstance(content, str):
            return f"{where}.message.content is {type(content).__name__}, not text"
        problem = _logprobs_problem(getattr(choice, "logprobs", None), where)
        if problem:
            return problem
    return _usage_problem(getattr(resp, "usage", None))

"""Secrets never reach a file: the one place that strips credentials from what cai writes.

A key can arrive in a URL's userinfo (``http://user:KEY@host/v1``), in a query parameter
(``?api_key=KEY``), or be echoed back by a server, whole or in part, inside an error message or
even a completion. Everything cai writes for people or tools to read later (recipe copies, logs,
records and their provenance, summaries, reports) passes through `redact` (data) or
`redact_text` (one string) first.

What counts as secret: credentials in any URL found in the text, and the values of the
environment variables that hold keys (``OPENAI_API_KEY``, the variable a backend was told to
read, and any ``*_API_KEY``/``*_TOKEN``/``*_SECRET``/``*_PASSWORD``), plus the passwords inside
``OPENAI_BASE_URL`` and any URL a caller names. A known secret is replaced wherever it occurs; so
is any run of `FRAGMENT_CHARS` or more of its characters (a server's "key sk-ab12…" echo).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

REDACTED = "***"
# Values shorter than this are not treated as secrets: "none", "1" or "local" occur in ordinary
# text, and replacing them would corrupt records without protecting anything.
MIN_SECRET_CHARS = 8
# An echoed piece of a key this long is redacted too. Only keys at least twice as long are
# scanned for pieces, so a short, guessable value cannot blank out common words.
FRAGMENT_CHARS = 8

# A URL with a scheme, up to whitespace, quotes or angle brackets.
URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
# Query (or fragment) parameter names that carry credentials.
_SECRET_PARAM_RE = re.compile(
    r"key|token|secret|passw|pwd|sig|auth|cred|session|jwt|bearer|^code$|^x-amz-|^x-goog-", re.IGNORECASE
)
# Environment variables whose value is a credential.
_SECRET_ENV_RE = re.compile(r"(^|_)(API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD)$")
_DEFAULT_KEY_ENV = "OPENAI_API_KEY"
_DEFAULT_URL_ENV = "OPENAI_BASE_URL"


def _redact_params(text: str) -> str:
    """`a=1&api_key=K` → `a=1&api_key=***`, leaving the rest exactly as written."""
    out = []
    for part in text.split("&"):
        name, eq, value = part.partition("=")
        if eq and value and _SECRET_PARAM_RE.search(unquote(name)):
            part = f"{name}={REDACTED}"
        out.append(part)
    return "&".join(out)


def redact_url(url: str) -> str:
    """The URL without its userinfo (``user:pass@``) and with credential-like query or fragment
    parameters (``key``, ``api_key``, ``token``, ``access_token``, ``sig`` …) blanked; a URL with
    neither comes back unchanged."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = len(rest)
    for stop in "/?#":
        i = rest.find(stop)
        if i != -1:
            end = min(end, i)
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        authority = f"{REDACTED}@{authority.rsplit('@', 1)[1]}"
    path, qmark, query = tail.partition("?")
    if qmark:
        query, hash_, fragment = query.partition("#")
        tail = f"{path}?{_redact_params(query)}{hash_}{_redact_params(fragment) if hash_ else ''}"
    elif "#" in tail:
        path, hash_, fragment = tail.partition("#")
        tail = f"{path}#{_redact_params(fragment)}"
    return f"{scheme}://{authority}{tail}"


def url_secrets(url: str | None) -> set[str]:
    """The credentials inside a URL (userinfo, secret parameters), to be redacted wherever they
    are echoed later without the URL around them."""
    if not url:
        return set()
    found: set[str] = set()
    try:
        parts = urlsplit(url)
        found |= {unquote(v) for v in (parts.username, parts.password) if v}
    except ValueError:  # e.g. a malformed port: fall back to the raw userinfo
        authority = url.partition("://")[2].split("/", 1)[0]
        if "@" in authority:
            found |= set(authority.rsplit("@", 1)[0].split(":", 1))
    for params in (url.partition("?")[2].partition("#")[0], url.partition("#")[2]):
        for part in params.split("&"):
            name, eq, value = part.partition("=")
            if eq and value and _SECRET_PARAM_RE.search(unquote(name)):
                found |= {value, unquote(value)}
    return {s for s in found if len(s) >= MIN_SECRET_CHARS}


def env_secrets(names: Iterable[str | None] = ()) -> set[str]:
    """Secret values in the environment: the named variables (a backend's ``api_key_env``),
    ``OPENAI_API_KEY``, any variable named like a credential, and the passwords inside
    ``OPENAI_BASE_URL``."""
    wanted = {n for n in names if n} | {_DEFAULT_KEY_ENV}
    found = {
        v
        for k, v in os.environ.items()
        if (k in wanted or _SECRET_ENV_RE.search(k.upper())) and len(v) >= MIN_SECRET_CHARS
    }
    return found | url_secrets(os.environ.get(_DEFAULT_URL_ENV))


def known_secrets(*, urls: Iterable[str | None] = (), env: Iterable[str | None] = ()) -> frozenset[str]:
    """Everything `redact` should blank: `env_secrets` plus the credentials in ``urls``."""
    found = env_secrets(env)
    for url in urls:
        found |= url_secrets(url)
    return frozenset(found)


def _fragment_spans(text: str, secret: str) -> list[tuple[int, int]]:
    spans = []
    for i in range(len(secret) - FRAGMENT_CHARS + 1):
        piece = secret[i : i + FRAGMENT_CHARS]
        start = text.find(piece)
        while start != -1:
            spans.append((start, start + FRAGMENT_CHARS))
            start = text.find(piece, start + 1)
    return spans


def redact_text(text: str, secrets: Iterable[str] | None = None) -> str:
    """One string with URL credentials, known secrets and echoed pieces of them replaced by
    ``***``. ``secrets`` defaults to `known_secrets()`."""
    if "://" in text:
        text = URL_RE.sub(lambda m: redact_url(m.group(0)), text)
    values = sorted(known_secrets() if secrets is None else secrets, key=len, reverse=True)
    for s in values:
        if len(s) >= MIN_SECRET_CHARS and s in text:
            text = text.replace(s, REDACTED)
    spans = [span for s in values if len(s) >= 2 * FRAGMENT_CHARS for span in _fragment_spans(text, s)]
    if not spans:
        return text
    spans.sort()
    merged = [list(spans[0])]
    for start, end in spans[1:]:
        if start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, last = [], 0
    for start, end in merged:
        out += [text[last:start], REDACTED]
        last = end
    return "".join([*out, text[last:]])


def redact(data: Any, secrets: Iterable[str] | None = None) -> Any:
    """JSON-like data (dicts, lists, strings; keys too) with every string passed through
    `redact_text`. ``secrets`` defaults to `known_secrets()`, computed once for the whole walk."""
    values = known_secrets() if secrets is None else frozenset(secrets)

    def walk(x: Any) -> Any:
        if isinstance(x, str):
            return redact_text(x, values)
        if isinstance(x, dict):
            return {walk(k): walk(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [walk(v) for v in x]
        return x

    return walk(data)

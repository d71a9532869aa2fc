"""Secrets never reach a file: the one place that strips credentials from what cai writes.

A key can arrive in a URL's userinfo (``http://user:KEY@host/v1``), in a query parameter
(``?api_key=KEY``), or be echoed back by a server, whole or in part, inside an error message or
even a completion. Everything cai writes for people or tools to read later (recipe copies, logs,
records and their provenance, summaries, reports) passes through `redact` (data) or
`redact_text` (one string) first.

What counts as secret (and nothing else): the API keys cai itself was given (``OPENAI_API_KEY``
and the variable a backend was told to read with ``api_key_env``) and credentials in URLs (any
URL in the text, ``OPENAI_BASE_URL`` and any URL a caller names). Other environment variables
are none of cai's business: a ``POSTGRES_PASSWORD=postgres`` must not blank the word "postgres"
in a model's answer. A key is matched whole in any letter case, and so is any run of
`FRAGMENT_CHARS` or more of its characters (a server's "key sk-ab12…" echo), whatever the key's
length.

Redaction is for what cai writes *about* a run (errors, logs, summaries, reports, cards, copies of
recipes). Model text is data and is never rewritten: a backend whose answer contains a secret
fails that record instead (`contains_secret`), keeping the error and dropping the text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

REDACTED = "***"
# An echoed piece of a key this long (or longer) counts as the key, whatever the key's length.
# Values shorter than this are not treated as secrets: "none", "1" or "local" occur in ordinary
# text, and a five-character key cannot be told from a word.
FRAGMENT_CHARS = 6
MIN_SECRET_CHARS = FRAGMENT_CHARS

# A URL with a scheme, up to whitespace, quotes or angle brackets.
URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
# Query (or fragment) parameter names that carry credentials.
_SECRET_PARAM_RE = re.compile(
    r"key|token|secret|passw|pwd|sig|auth|cred|session|jwt|bearer|^code$|^x-amz-|^x-goog-", re.IGNORECASE
)
# Keys that local servers are commonly given because the client insists on one (the openai
# client sends "none" when no key is configured): placeholders, not secrets. Treated as secrets
# they would fail every answer that says "required" or "needed".
_PLACEHOLDER_KEYS = frozenset(
    {"none", "empty", "dummy", "sk-dummy", "no-key", "sk-no-key-required", "not-needed", "placeholder", "unused"}
)
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
        # With a password, the user name is a name (often "user" or the service's), not a secret;
        # alone (``https://KEY@host``) it is the credential.
        found |= {unquote(parts.password)} if parts.password else {unquote(v) for v in (parts.username,) if v}
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
    """The keys cai was given through the environment: ``OPENAI_API_KEY``, the variables named in
    ``names`` (a backend's ``api_key_env``), and the credentials inside ``OPENAI_BASE_URL``. No
    other variable is read, whatever its name."""
    wanted = {n for n in names if n} | {_DEFAULT_KEY_ENV}
    found = {
        v
        for k in wanted
        if (v := os.environ.get(k)) and len(v) >= MIN_SECRET_CHARS and v.lower() not in _PLACEHOLDER_KEYS
    }
    return found | url_secrets(os.environ.get(_DEFAULT_URL_ENV))


def known_secrets(*, urls: Iterable[str | None] = (), env: Iterable[str | None] = ()) -> frozenset[str]:
    """Everything `redact` should blank: `env_secrets` plus the credentials in ``urls``."""
    found = env_secrets(env)
    for url in urls:
        found |= url_secrets(url)
    return frozenset(found)


def _fold(text: str) -> str:
    """Lower case, one character for one (a character whose lower case is longer stays as it
    is), so that spans found in the folded text are spans of the original."""
    return "".join(low if len(low := c.lower()) == 1 else c for c in text)


def _pieces(key: str) -> set[str]:
    """What of a (case-folded) key counts as the key when found in text: the whole key, and each
    window of `FRAGMENT_CHARS` that holds a digit. A random key's windows nearly all do; a window
    of letters alone ("requir" of "sk-no-key-required") is as likely a piece of a word."""
    windows = {key[i : i + FRAGMENT_CHARS] for i in range(len(key) - FRAGMENT_CHARS + 1)}
    return {key} | {w for w in windows if any(c.isdigit() for c in w)}


def _secret_spans(text: str, secrets: Iterable[str]) -> list[tuple[int, int]]:
    """Where in `text` a secret, or a piece of one (`_pieces`), occurs, in any letter case: the
    spans of every match, merged."""
    low = _fold(text)
    spans = []
    for secret in secrets:
        key = _fold(secret)
        if len(key) < MIN_SECRET_CHARS:
            continue
        for piece in _pieces(key):
            start = low.find(piece)
            while start != -1:
                spans.append((start, start + len(piece)))
                start = low.find(piece, start + 1)
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def contains_secret(text: str, secrets: Iterable[str] | None = None) -> bool:
    """Does `text` hold one of the known secrets (keys cai was given, credentials of the URLs it
    was given), or a piece of one? Backends ask this of model answers, which are failed rather
    than rewritten. Credentials in other URLs are not asked about: an answer explaining
    ``postgres://user:password@localhost/db`` is ordinary data."""
    return bool(_secret_spans(text, known_secrets() if secrets is None else secrets))


def redact_text(text: str, secrets: Iterable[str] | None = None) -> str:
    """One string with URL credentials, known secrets and echoed pieces of them replaced by
    ``***``. ``secrets`` defaults to `known_secrets()`."""
    if "://" in text:
        text = URL_RE.sub(lambda m: redact_url(m.group(0)), text)
    spans = _secret_spans(text, known_secrets() if secrets is None else secrets)
    out, last = [], 0
    for start, end in spans:
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

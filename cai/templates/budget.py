"""How much a prompt template may build while it renders.

A template is a small program: `'x' * 1000` joined ten times, three times over, is 10⁹
characters, and `~`, `%`, filters and loops can do the same. So every operation that builds a
value (operators, `~`, filters, method calls, `{{ }}` of a container, the body of a block or
macro, the output itself) is checked *before* it runs against an upper bound on what it would
build, and charged *after* against one allowance per render. Memory then stays bounded while
rendering, instead of being measured after a gigabyte string exists.

Bounds are upper bounds, cheap to compute: the size of `str()`/`repr()` of nested data is
summed with memoisation by identity, so `[[a] * 1000] * 1000` costs two thousand steps, not a
million, and measuring stops as soon as the limit is passed.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterable, Iterator, Mapping, MappingView
from dataclasses import dataclass
from typing import Any

from jinja2 import Undefined
from jinja2.sandbox import SecurityError
from markupsafe import Markup

# The largest prompt a template may render, in characters. About 250,000 tokens: more than any
# context window the models cai drives accept, so a longer prompt is a template bug (or an attack)
# and would only be truncated or refused by the model, after being written to every record.
MAX_PROMPT_CHARS = 1_000_000
# No single value a template builds (a string, a list, a block's text) may exceed what could be
# printed: anything larger cannot end up in a prompt.
MAX_VALUE_CHARS = MAX_PROMPT_CHARS
# All values built during one render together, in bytes of Python objects (sys.getsizeof): room
# for a full-size prompt built a few times over, yet a small, fixed amount of memory.
MAX_RENDER_BYTES = 16 * 2**20
# Nesting depth of a value whose size is measured (messages are 2-3 deep).
MAX_DEPTH = 64

_COMMON_WS = {ord("\n"): None, ord("\r"): None, ord("\t"): None}
_SHORT = 256  # strings up to this length are measured exactly with repr()


class TooLarge(SecurityError):
    """A template would build more than its budget allows."""


@dataclass
class _Allowance:
    bytes_left: int


# Set for the duration of one render (see `allowance`); a ContextVar keeps renders in different
# threads independent. Outside a render only the per-value limits apply.
_ALLOWANCE: contextvars.ContextVar[_Allowance | None] = contextvars.ContextVar("cai_render_allowance", default=None)


@contextlib.contextmanager
def allowance() -> Iterator[None]:
    """One render's allowance of built bytes (`MAX_RENDER_BYTES` read at call time, so a test can
    lift it to exercise the time budget alone)."""
    token = _ALLOWANCE.set(_Allowance(MAX_RENDER_BYTES))
    try:
        yield
    finally:
        _ALLOWANCE.reset(token)


def _too_large(what: str) -> TooLarge:
    return TooLarge(f"value too large: {what} would build more than {MAX_VALUE_CHARS:,} characters")


def ensure(chars: int, what: str) -> None:
    """Refuse, before building it, a value of (at most) `chars` characters that would not fit."""
    if chars > MAX_VALUE_CHARS:
        raise _too_large(what)
    a = _ALLOWANCE.get()
    # A character takes at least one byte, so this is a lower bound on what it would cost.
    if a is not None and chars > a.bytes_left:
        raise _over_allowance()


def _over_allowance() -> TooLarge:
    return TooLarge(f"values too large: the template builds more than {MAX_RENDER_BYTES // 2**20} MiB in one render")


def charge(value: Any, what: str, *inputs: Any) -> Any:
    """Count a value just built against the limits; values passed through unchanged are free."""
    if not isinstance(value, str | bytes | list | tuple | dict) or any(value is i for i in inputs):
        return value
    if len(value) > MAX_VALUE_CHARS:
        raise _too_large(what)
    a = _ALLOWANCE.get()
    if a is not None:
        a.bytes_left -= sys.getsizeof(value)
        if a.bytes_left < 0:
            raise _over_allowance()
    return value


def _text_too_large() -> TooLarge:
    return TooLarge(f"rendered text too large: more than {MAX_PROMPT_CHARS:,} characters")


class Buffer(list):  # type: ignore[type-arg]
    """Where Jinja collects the text of a block, macro or `{% set %}…{% endset %}` (in place of a
    plain list): refuses to grow past the prompt cap, at the template line that would pass it.

    Empty pieces are dropped, so the number of pieces is bounded too, whatever a loop prints.
    """

    __slots__ = ("chars",)

    def __init__(self) -> None:
        super().__init__()
        self.chars = 0

    def append(self, piece: str) -> None:
        if piece:
            self.chars += len(piece)
            if self.chars > MAX_PROMPT_CHARS:
                raise _text_too_large()
            super().append(piece)

    def extend(self, pieces: Iterable[str]) -> None:
        for piece in pieces:
            self.append(piece)


def concat(pieces: Iterable[str]) -> str:
    """Join a block's text or the rendered output, refusing it while it grows past the cap."""
    if not isinstance(pieces, Buffer):
        kept = Buffer()
        for piece in pieces:
            try:
                kept.append(piece)
            except TooLarge as err:
                throw = getattr(pieces, "throw", None)
                if throw is not None:
                    throw(err)  # raised again in the template, at the line that printed the piece
                raise
        pieces = kept
    return charge("".join(pieces), "rendered text")


class _Over(Exception):
    """Measuring passed the limit: the exact size no longer matters."""


@dataclass
class Shape:
    """Upper bounds on the printed size of a value, its number of parts and its nesting."""

    chars: int
    nodes: int = 1
    depth: int = 0


class _Sizer:
    def __init__(self, limit: int):
        self.limit = limit
        self.memo: dict[int, Shape] = {}

    def repr_shape(self, v: Any, depth: int = 0) -> Shape:
        if depth > MAX_DEPTH:
            raise TooLarge(f"value nested more than {MAX_DEPTH} levels deep in template")
        if isinstance(v, str):
            extra = 8 if isinstance(v, Markup) else 0  # Markup('…')
            if len(v) <= _SHORT:
                return Shape(len(repr(v)) + extra)
            return self._memo(v, lambda: Shape(_repr_len(v) + extra))
        if isinstance(v, bool) or v is None:
            return Shape(5)
        if isinstance(v, int):
            return Shape(v.bit_length() // 3 + 2)
        if isinstance(v, float | complex):
            return Shape(64)
        if isinstance(v, bytes | bytearray):
            return Shape(4 * len(v) + 14)
        if isinstance(v, Undefined):
            return Shape(16)
        if isinstance(v, Mapping):
            return self._memo(v, lambda: self._items(((k, x) for k, x in v.items()), 2, 4, depth, pairs=True))
        if isinstance(v, list | tuple | set | frozenset | MappingView):
            return self._memo(v, lambda: self._items(iter(v), 16, 2, depth))
        return Shape(256)  # loop contexts, macros, iterators: a short `<… object>`

    def _memo(self, v: Any, compute: Any) -> Shape:
        shape = self.memo.get(id(v))
        if shape is None:
            shape = self.memo[id(v)] = compute()
        return shape

    def _items(self, items: Iterator[Any], overhead: int, sep: int, depth: int, pairs: bool = False) -> Shape:
        total = Shape(overhead, 1, depth)
        for item in items:
            parts = item if pairs else (item,)
            for part in parts:
                s = self.repr_shape(part, depth + 1)
                total.chars += s.chars
                total.nodes += s.nodes
                total.depth = max(total.depth, s.depth)
            total.chars += sep
            if total.chars > self.limit:
                raise _Over
        return total


def _repr_len(s: str) -> int:
    """An upper bound on len(repr(s)), without building it."""
    n = len(s)
    base = n + 2 + s.count("\\") + s.count("'")
    if s.isprintable():
        return base
    if s.translate(_COMMON_WS).isprintable():  # newlines and tabs print as two characters
        return base + s.count("\n") + s.count("\r") + s.count("\t")
    return (4 if s.isascii() else 10) * n + 2  # \xNN, or up to \UNNNNNNNN


def shape(value: Any, limit: int = MAX_VALUE_CHARS) -> Shape:
    """Bounds on `repr(value)`; `chars` is `limit + 1` once it is known to be over `limit`."""
    try:
        return _Sizer(limit).repr_shape(value)
    except _Over:
        return Shape(limit + 1)


def text_size(value: Any, limit: int = MAX_VALUE_CHARS) -> int:
    """An upper bound on `len(str(value))` (`limit + 1` once known to be over `limit`)."""
    if isinstance(value, str):
        return len(value)
    return shape(value, limit).chars

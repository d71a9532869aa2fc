"""The sandbox prompt templates render in: shared like code, loaded like data.

Jinja's immutable sandbox with no globals, no `attr`/`format`/`random`/`map`… filters, size
limits on `*`/`**`/`%`/`+` and on integer arguments (widths, paddings), and a time budget per
render checked on every call and loop iteration, so a template can neither reach Python
internals nor stall a run.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import operator
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

MAX_SEQUENCE = 200_000


MAX_INT_BITS = 4096
RENDER_SECONDS = 2.0
BUDGET_FILTER = "_cai_budget"
# Set for the duration of one render; checked on every call and loop iteration, so neither a
# loop nor (mutually) recursive macros can stall a run. A ContextVar keeps renders in different
# threads independent.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("cai_render_deadline", default=None)
_WIDTH_RE = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\d*)(?:\.(\d*))?")


def _tick() -> None:
    deadline = _DEADLINE.get()
    if deadline is not None and time.monotonic() > deadline:
        raise SecurityError(f"template took longer than {RENDER_SECONDS:g}s to render")


def _check_args(args: Iterable[Any]) -> None:
    """Refuse huge integer arguments: `ljust`, `center`, `indent`, format widths … allocate them."""
    for a in args:
        if isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_SEQUENCE:
            raise SecurityError(f"numeric argument {a} too large in template")


def _budgeted(iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        _tick()
        yield item


def _guard_filter(func: Any) -> Any:
    skip = 2 if getattr(func, "jinja_pass_arg", None) is not None else 1

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        _check_args([*args[skip:], *kwargs.values()])
        return func(*args, **kwargs)

    return guarded


class _LimitedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus bounds on operators that could exhaust memory or time."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _tick()
        _check_args([*args, *kwargs.values()])
        return super().call(context, obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Any:
        # Widths written into the format string itself ("{:>999999999}"); nested widths arrive
        # as arguments and are checked in `call`.
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str) and getattr(value, "__name__", "") in ("format", "format_map"):
            for spec in re.findall(r"\{[^{}]*\}", owner):
                _check_args(int(d) for d in re.findall(r"\d+", spec))
        return super().wrap_str_format(value)

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, int | float) and abs(right) > 64:
                raise SecurityError("exponent too large in template")
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and right > 0
                and abs(left).bit_length() * right > MAX_INT_BITS
            ):
                raise SecurityError("number too large in template")
            return operator.pow(left, right)
        if operator_name == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > MAX_SEQUENCE:
                    raise SecurityError("sequence repetition too large in template")
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS
            ):
                raise SecurityError("number too large in template")
            return operator.mul(left, right)
        if operator_name == "%":
            if isinstance(left, str):
                widths = [int(w) for m in _WIDTH_RE.finditer(left) for w in m.groups() if w]
                _check_args(widths)
                _check_args(right if isinstance(right, tuple) else [right])
            return operator.mod(left, right)
        result = operator.add(left, right)
        if isinstance(result, str | list | tuple) and len(result) > MAX_SEQUENCE * 10:
            raise SecurityError("string too large in template")
        return result


def make_env(dirs: Sequence[Path]) -> jinja2.Environment:
    env = _LimitedSandbox(
        loader=jinja2.FileSystemLoader([str(d) for d in dirs]),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # No globals at all: lipsum, cycler, joiner, namespace, range and dict are classic stepping
    # stones in sandbox escapes, and prompts do not need them.
    env.globals.clear()
    # `random` is left out too: a prompt must render the same way every time.
    for unsafe in (
        "attr",
        "format",
        "xmlattr",
        "map",
        "select",
        "reject",
        "selectattr",
        "rejectattr",
        "groupby",
        "sum",
        "random",
    ):
        env.filters.pop(unsafe, None)
    env.filters = {name: _guard_filter(f) for name, f in env.filters.items()}
    env.filters[BUDGET_FILTER] = _budgeted
    return env


@contextlib.contextmanager
def time_limit() -> Iterator[None]:
    """Bound one render by `RENDER_SECONDS` (read at call time, so tests can shorten it)."""
    token = _DEADLINE.set(time.monotonic() + RENDER_SECONDS)
    try:
        yield
    finally:
        _DEADLINE.reset(token)

"""The sandbox prompt templates render in: shared like code, loaded like data.

Jinja's immutable sandbox with no globals, no `attr`/`format`/`random`/`map`/`pprint`…
filters, limits on integers (widths, paddings, powers), a time budget per render checked on
every call and loop iteration, and a budget on the size of every value a template builds
(`cai.templates.budget`), so a template can neither reach Python internals, nor stall a run,
nor fill memory or records with text.

Where values are built and checked: the operators `*`, `**`, `+`, `%` (`call_binop`); `~`
(compiled to `environment.cai_concat` by `_CodeGenerator` instead of Jinja's unchecked
`str_join`); every filter (`_guard_filter`); every method call (`call`); `{{ x }}` of a
container (`finalize`); and the text of blocks, macros and the output itself (`concat`, and
`cai_buffer` in place of Jinja's plain lists).
Jinja's constant folding is switched off (`optimized=False`, a context-taking `finalize`) so
nothing a template computes is evaluated at compile time, outside these checks.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import operator
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Any

import jinja2
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from cai.templates import budget
from cai.templates.budget import text_size

MAX_SEQUENCE = 200_000


MAX_INT_BITS = 4096
RENDER_SECONDS = 2.0
BUDGET_FILTER = "_cai_budget"
# Set for the duration of one render; checked on every call and loop iteration, so neither a
# loop nor (mutually) recursive macros can stall a run. A ContextVar keeps renders in different
# threads independent.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("cai_render_deadline", default=None)
_WIDTH_RE = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\d*)(?:\.(\d*))?")

# Filters that never turn their arguments into text (they return references, numbers or
# lists of references); every other filter calls str() on its value and arguments, so those
# are measured first.
_NON_TEXT_FILTERS = frozenset(
    {
        "abs",
        "batch",
        "count",
        "d",
        "default",
        "dictsort",
        "filesizeformat",
        "first",
        "float",
        "int",
        "items",
        "join",  # measured by its own estimate, item by item
        "last",
        "length",
        "list",
        "max",
        "min",
        "reverse",
        "round",
        "slice",
        "sort",
        "unique",
    }
)

# Filters that return one of their arguments (or an item of it) rather than a new value.
_PASS_THROUGH_FILTERS = frozenset({"d", "default", "first", "last", "max", "min"})


def _tick() -> None:
    deadline = _DEADLINE.get()
    if deadline is not None and time.monotonic() > deadline:
        raise SecurityError(f"template took longer than {RENDER_SECONDS:g}s to render")


def _is_number(a: Any) -> bool:
    return isinstance(a, int | float) or a is None


def _check_args(args: Iterable[Any]) -> None:
    """Refuse huge integer arguments: `ljust`, `center`, `indent`, format widths … allocate them."""
    for a in args:
        if isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_SEQUENCE:
            raise SecurityError(f"numeric argument {a} too large in template")


def _budgeted(iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        _tick()
        yield item


def _width(w: Any) -> int:
    """Characters a width/padding argument can add: a number, or a string repeated per line."""
    if isinstance(w, bool) or w is None:
        return 0
    if isinstance(w, int):
        return max(w, 0)
    return text_size(w)


def _lines(s: Any) -> int:
    return s.count("\n") + 2 if isinstance(s, str) else text_size(s) + 2


def _replaced(s: Any, old: Any, new: Any, count: Any) -> int:
    n, o, w = text_size(s), text_size(old), text_size(new)
    hits = n + 1 if o == 0 else n // o
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return n + hits * max(w - o, 0)


def _joined(items: Sequence[Any], sep: Any, attribute: Any = None) -> int:
    measure = text_size if attribute is None else (lambda v: budget.shape(v).chars)
    total = max(len(items) - 1, 0) * text_size(sep)
    for item in items:
        total += measure(item)
        if total > budget.MAX_VALUE_CHARS:
            break
    return total


def _wrapped(s: Any, width: Any, wrapstring: Any) -> int:
    n = text_size(s)
    lines = 2 * n // max(int(width), 1) + _lines(s)
    return n + lines * (1 if wrapstring is None else text_size(wrapstring))


def _json_indent(value: Any, indent: Any) -> int:
    if indent is None:
        return 0
    s = budget.shape(value)
    if s.chars > budget.MAX_VALUE_CHARS:
        return s.chars
    return s.nodes * (1 + (s.depth + 1) * _width(indent))


# Upper bounds on what a filter builds beyond its input, from its bound arguments.
_FILTER_GROWTH: dict[str, Callable[[dict[str, Any]], int]] = {
    "center": lambda a: max(text_size(a["value"]), _width(a["width"])) + 1,
    "indent": lambda a: text_size(a["s"]) + 1 + _lines(a["s"]) * _width(a["width"]),
    "wordwrap": lambda a: _wrapped(a["s"], a["width"], a["wrapstring"]),
    "replace": lambda a: _replaced(a["s"], a["old"], a["new"], a["count"]),
    "truncate": lambda a: text_size(a["s"]) + text_size(a["end"]),
    "join": lambda a: _joined(a["value"], a["d"], a["attribute"]),
    "tojson": lambda a: _json_indent(a["value"], a["indent"]),
}


def _format_size(fmt: str, args: Sequence[Any], kwargs: dict[str, Any]) -> int:
    """`fmt.format(*args, **kwargs)`: each field prints at most the largest argument, padded."""
    values = [*args, *kwargs.values()]
    widest = max((budget.shape(v).chars for v in values), default=0)
    pad = max((int(d) for d in re.findall(r"\d+", fmt)), default=0)
    pad = max(pad, *(_width(v) for v in values if isinstance(v, int)), 0)
    return len(fmt) + fmt.count("{") * (widest + pad)


def _percent_size(fmt: str, right: Any) -> int:
    """`fmt % right`: a tuple's items are used once each, a mapping's values any number of times."""
    widths = sum(int(w) for m in _WIDTH_RE.finditer(fmt) for w in m.groups() if w)
    if isinstance(right, tuple):
        used = sum(max(budget.shape(v).chars, _width(v) if isinstance(v, int) else 0) for v in right)
    else:
        used = fmt.count("%") * budget.shape(right).chars
    return len(fmt) + widths + used


# Upper bounds for the methods of str/bytes that build more than they were given.
_METHOD_GROWTH: dict[str, Callable[[Any, tuple[Any, ...], dict[str, Any]], int]] = {
    "join": lambda s, a, k: _joined(a[0], s) if a and isinstance(a[0], Sized) else 0,
    "replace": lambda s, a, k: _replaced(s, *a[:2], a[2] if len(a) > 2 else k.get("count")) if len(a) >= 2 else 0,
    "center": lambda s, a, k: max(len(s), _width(a[0] if a else 0)),
    "ljust": lambda s, a, k: max(len(s), _width(a[0] if a else 0)),
    "rjust": lambda s, a, k: max(len(s), _width(a[0] if a else 0)),
    "zfill": lambda s, a, k: max(len(s), _width(a[0] if a else 0)),
    "expandtabs": lambda s, a, k: (
        len(s) + s.count("\t" if isinstance(s, str) else b"\t") * _width(a[0] if a else k.get("tabsize", 8))
    ),
    "translate": lambda s, a, k: (
        len(s) * max([1, *(text_size(v) for v in (a[0].values() if a and isinstance(a[0], dict) else ()))])
    ),
    "format": lambda s, a, k: _format_size(s, a, k),
    "format_map": lambda s, a, k: _format_size(s, [a[0]] if a else [], {}),
}


def _guard_filter(name: str, func: Any) -> Any:
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
    try:
        signature: inspect.Signature | None = inspect.signature(func)
    except (TypeError, ValueError):
        signature = None
    growth = _FILTER_GROWTH.get(name)
    text = name not in _NON_TEXT_FILTERS
    passes_through = name in _PASS_THROUGH_FILTERS
    what = f"filter '{name}'"

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        own = args[skip:]
        _check_args([*own[1:], *kwargs.values()])
        if name == "join" and own and not isinstance(own[0], Sized):
            # An iterator (`unique`, `batch` …) is measured and then joined from the same list.
            own = (list(own[0]), *own[1:])
            args = (*args[:skip], *own)
        if text:
            for a in (*own, *kwargs.values()):
                if not _is_number(a):
                    budget.ensure(text_size(a), what)
        if growth is not None and signature is not None:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            budget.ensure(growth(bound.arguments), what)
        result = func(*args, **kwargs)
        return result if passes_through else budget.charge(result, what, *own, *kwargs.values())

    return guarded


def _finalize(eval_ctx: Any, value: Any) -> Any:
    """`{{ value }}` prints str(value): measure a container before it is turned into text."""
    if not isinstance(value, str | jinja2.Undefined):
        budget.ensure(text_size(value), "printing a value")
    return value


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, with `~` and the buffers of blocks going through the size checks."""

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.cai_buffer()")

    def visit_Concat(self, node: jinja2.nodes.Concat, frame: Frame) -> None:
        self.write("environment.cai_concat(context.eval_ctx, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _LimitedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus bounds on everything that could exhaust memory or time."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _CodeGenerator

    def concat(self, pieces: Iterable[str]) -> str:  # type: ignore[override]
        """The text of the output, a block or a macro: bounded while it grows."""
        return budget.concat(pieces)

    def cai_buffer(self) -> budget.Buffer:
        return budget.Buffer()

    def cai_concat(self, eval_ctx: Any, args: tuple[Any, ...]) -> str:
        """The `~` operator."""
        _tick()
        total = 0
        for a in args:
            total += text_size(a)
            budget.ensure(total, "'~'")
        return budget.charge((markup_join if eval_ctx.autoescape else str_join)(args), "'~'", *args)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _tick()
        _check_args([*args, *kwargs.values()])
        target = getattr(obj, "__wrapped__", obj)  # str.format arrives wrapped by the sandbox
        owner = getattr(target, "__self__", None)
        name = getattr(target, "__name__", "")
        what = f"'.{name}()'"
        if isinstance(owner, str | bytes):
            if name == "join" and args and not isinstance(args[0], Sized):
                args = (list(args[0]), *args[1:])
            growth = _METHOD_GROWTH.get(name)
            if growth is not None:
                budget.ensure(growth(owner, args, kwargs), what)
        result = super().call(context, obj, *args, **kwargs)
        if isinstance(owner, str | bytes):  # their methods build new values (dict.get does not)
            budget.charge(result, what, owner, *args, *kwargs.values())
        return result

    def wrap_str_format(self, value: Any) -> Any:
        # Widths written into the format string itself ("{:>999999999}"); nested widths arrive
        # as arguments and are checked in `call`.
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str) and getattr(value, "__name__", "") in ("format", "format_map"):
            for spec in re.findall(r"\{[^{}]*\}", owner):
                _check_args(int(d) for d in re.findall(r"\d+", spec))
        return super().wrap_str_format(value)

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        _tick()
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
            return budget.charge(operator.mul(left, right), "'*'", left, right)
        if operator_name == "%":
            if isinstance(left, str):
                widths = [int(w) for m in _WIDTH_RE.finditer(left) for w in m.groups() if w]
                _check_args(widths)
                _check_args(right if isinstance(right, tuple) else [right])
                budget.ensure(_percent_size(left, right), "'%'")
            return budget.charge(operator.mod(left, right), "'%'", left, right)
        if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            budget.ensure(len(left) + len(right), "'+'")
        return budget.charge(operator.add(left, right), "'+'", left, right)


def make_env(dirs: Sequence[Path]) -> jinja2.Environment:
    env = _LimitedSandbox(
        loader=jinja2.FileSystemLoader([str(d) for d in dirs]),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
        # No constant folding: everything a template computes runs at render time, under the
        # time and size budgets, rather than unchecked when it is compiled.
        optimized=False,
        finalize=jinja2.pass_eval_context(_finalize),
    )
    # No globals at all: lipsum, cycler, joiner, namespace, range and dict are classic stepping
    # stones in sandbox escapes, and prompts do not need them.
    env.globals.clear()
    # `random` is left out too: a prompt must render the same way every time. `pprint` indents
    # nested lines by the width of a dict's key and `urlize` writes its `target`/`rel` strings
    # into every link, so neither output has a useful bound; prompts need neither.
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
        "pprint",
        "urlize",
    ):
        env.filters.pop(unsafe, None)
    env.filters = {name: _guard_filter(name, f) for name, f in env.filters.items()}
    env.filters[BUDGET_FILTER] = _budgeted
    return env


@contextlib.contextmanager
def time_limit() -> Iterator[None]:
    """Bound one render by `RENDER_SECONDS` (read at call time, so tests can shorten it) and
    by one allowance of built values (`cai.templates.budget`)."""
    token = _DEADLINE.set(time.monotonic() + RENDER_SECONDS)
    try:
        with budget.allowance():
            yield
    finally:
        _DEADLINE.reset(token)

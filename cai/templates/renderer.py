"""Sandboxed rendering of the Jinja prompt templates.

Templates are shared like code but loaded like data: they render in Jinja's immutable sandbox
with StrictUndefined, no globals, no `attr`/`format`/`random` filters, size limits on `*`/`**`/`%`
and on integer arguments (widths, paddings), and a time budget per render checked on every call
and loop iteration, so a template can neither reach Python internals nor stall a run. Each
template starts with a header comment declaring its variables::

    {#- cai
    description: what the template is for
    variables: {conversation: messages, question: text}
    -#}

Variable types (text, messages, list, number) let `cai validate` dry-render with placeholders.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import operator
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from cai.constitution.yamlio import load_yaml, read_text
from cai.errors import CaiError, Problem, did_you_mean, fail
from cai.paths import data_dir

HEADER_RE = re.compile(r"\A\{#-?\s*cai[ \t]*\n(?P<body>.*?)-?#\}", re.DOTALL)
VAR_TYPES = ("text", "messages", "list", "number")
MAX_SEQUENCE = 200_000


MAX_INT_BITS = 4096
RENDER_SECONDS = 2.0
_BUDGET_FILTER = "_cai_budget"
# Set for the duration of one render; checked on every call and loop iteration, so neither a
# loop nor (mutually) recursive macros can stall a run. A ContextVar keeps renders in different
# threads independent.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "cai_render_deadline", default=None
)
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
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(n, int)
                    and len(seq) * n > MAX_SEQUENCE
                ):
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


@dataclass(frozen=True)
class TemplateInfo:
    name: str
    path: Path
    description: str
    variables: dict[str, str]
    sha256: str


def _make_env(dirs: Sequence[Path]) -> jinja2.Environment:
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
    env.filters[_BUDGET_FILTER] = _budgeted
    return env


def template_lineno(exc: BaseException, filename: str | None) -> int | None:
    """The template line an exception was raised from (Jinja rewrites tracebacks to say so)."""
    if getattr(exc, "lineno", None):
        return int(exc.lineno)  # type: ignore[attr-defined]
    tb: TracebackType | None = exc.__traceback__
    line = None
    while tb is not None:
        if filename and tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def placeholder(name: str, kind: str) -> Any:
    if kind == "messages":
        return [
            {"role": "user", "content": f"<{name}: user>"},
            {"role": "assistant", "content": f"<{name}: assistant>"},
        ]
    if kind == "list":
        return [f"<{name}[0]>", f"<{name}[1]>"]
    if kind == "number":
        return 1
    return f"<{name}>"


class PromptRenderer:
    """Renders named templates from an ordered list of folders (first match wins).

    User folders come first so they can override shipped templates of the same name.
    """

    def __init__(self, extra_dirs: Sequence[str | Path] = ()):
        self.dirs = [Path(d).resolve() for d in extra_dirs] + [data_dir("prompts").resolve()]
        self._env = _make_env(self.dirs)
        self._info: dict[str, TemplateInfo] = {}
        # Compiled once per name: stages render the same few templates for every prompt.
        self._compiled: dict[str, jinja2.Template] = {}

    def names(self) -> list[str]:
        seen: dict[str, None] = {}
        for d in self.dirs:
            for p in sorted(d.glob("*.jinja")):
                seen.setdefault(p.stem, None)
        return list(seen)

    def path_of(self, name: str) -> Path:
        for d in self.dirs:
            p = d / f"{name}.jinja"
            if p.is_file():
                return p
        raise fail(name, None, "template", "no such template", did_you_mean(name, self.names()))

    def info(self, name: str) -> TemplateInfo:
        if name not in self._info:
            self._info[name] = inspect_template(self.path_of(name), self._env)
        return self._info[name]

    def render(self, name: str, **variables: Any) -> str:
        info = self.info(name)
        missing = sorted(set(info.variables) - set(variables))
        if missing:
            raise fail(str(info.path), 1, "variables", f"no value given for {', '.join(missing)}")
        undeclared = sorted(set(variables) - set(info.variables))
        if undeclared:
            raise fail(
                str(info.path), 1, "variables", f"template does not declare {', '.join(undeclared)}"
            )
        if name not in self._compiled:
            self._compiled[name] = compile_file(info.path, self._env)
        return render_template(self._compiled[name], variables).strip()


def parse_header(path: Path, source: str) -> tuple[str, dict[str, str]]:
    m = HEADER_RE.match(source)
    if not m:
        raise fail(
            str(path),
            1,
            "header",
            "template must start with a '{#- cai ... -#}' header declaring its variables",
        )
    doc = load_yaml(path, m.group("body"), first_line=2)  # the header's YAML starts on line 2
    data = doc.data
    if not isinstance(data, dict):
        raise fail(
            str(path), 2, "header", "header must be a mapping with description and variables"
        )
    unknown = set(data) - {"description", "variables"}
    if unknown:
        key = sorted(unknown)[0]
        raise fail(
            str(path),
            doc.line((key,)),
            f"header.{key}",
            "unknown key",
            did_you_mean(key, ["description", "variables"]),
        )
    raw_vars = data.get("variables")
    if isinstance(raw_vars, list) and all(isinstance(v, str) for v in raw_vars):
        variables = {v: "text" for v in raw_vars}
    elif isinstance(raw_vars, dict):
        variables = {}
        for k, v in raw_vars.items():
            if v not in VAR_TYPES:
                raise fail(
                    str(path),
                    doc.line(("variables", k)),
                    f"header.variables.{k}",
                    f"unknown type {v!r} (one of {', '.join(VAR_TYPES)})",
                    did_you_mean(str(v), VAR_TYPES),
                )
            variables[k] = v
    else:
        raise fail(str(path), 2, "header.variables", "missing or not a list/mapping of names")
    return str(data.get("description", "")), variables


def inspect_template(path: Path, env: jinja2.Environment) -> TemplateInfo:
    """Parse, check declared-vs-used variables, and hash one template file."""
    source = read_text(path)
    description, variables = parse_header(path, source)
    try:
        ast = env.parse(source, name=path.stem, filename=str(path))
    except jinja2.TemplateSyntaxError as e:
        raise fail(str(path), e.lineno, "template", f"syntax error: {e.message}") from None
    for ref in ast.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        raise fail(
            str(path),
            ref.lineno,
            "template",
            "include/extends/import are not allowed in prompt templates",
        )
    try:
        used = meta.find_undeclared_variables(ast)
    except jinja2.TemplateError as e:  # e.g. "No filter named 'attr'", raised by the code generator
        raise fail(str(path), getattr(e, "lineno", None), "template", str(e.message or e)) from None
    # `self` (the template reference) is implicit in Jinja, so meta does not report it.
    used |= {n.name for n in ast.find_all(nodes.Name) if n.name == "self" and n.ctx == "load"}
    extra = sorted(used - set(variables))
    if extra:
        line = next(
            (
                i + 1
                for i, text in enumerate(source.splitlines())
                if extra[0] in text and not text.lstrip().startswith("variables")
            ),
            1,
        )
        raise fail(
            str(path),
            line,
            "variables",
            f"template uses undeclared variable {extra[0]!r}",
            did_you_mean(extra[0], variables),
        )
    digest = hashlib.sha256(source.encode()).hexdigest()
    return TemplateInfo(path.stem, path, description, variables, digest)


@contextlib.contextmanager
def _as_template_error(where: str) -> Iterator[None]:
    """Turn whatever a template makes Jinja or Python raise into one user-facing line."""
    try:
        yield
    except SecurityError as e:
        raise fail(where, template_lineno(e, where), "template", f"unsafe operation: {e}") from None
    except jinja2.UndefinedError as e:
        raise fail(
            where, template_lineno(e, where), "template", f"undefined: {e.message}"
        ) from None
    except jinja2.TemplateError as e:
        raise fail(where, template_lineno(e, where), "template", str(e.message or e)) from None
    except Exception as e:  # anything a template makes Python raise is the template's problem
        raise fail(
            where, template_lineno(e, where), "template", f"render failed: {type(e).__name__}: {e}"
        ) from None


def compile_file(path: Path, env: jinja2.Environment) -> jinja2.Template:
    """Parse and compile a template once, with a loop budget on every `for`."""
    source = read_text(path)
    where = str(path)
    with _as_template_error(where):
        ast = env.parse(source, filename=where)
        for loop in list(ast.find_all(nodes.For)):
            loop.iter = nodes.Filter(
                loop.iter, _BUDGET_FILTER, [], [], None, None, lineno=loop.lineno
            )
        template = env.from_string(ast)
        template.filename = where  # Jinja's rewritten tracebacks then point into this file
    return template


def render_template(template: jinja2.Template, variables: dict[str, Any]) -> str:
    """Render a compiled template under the per-render time limit."""
    where = str(template.filename)
    token = _DEADLINE.set(time.monotonic() + RENDER_SECONDS)
    try:
        with _as_template_error(where):
            return template.render(**variables)
    finally:
        _DEADLINE.reset(token)


def render_file(path: Path, env: jinja2.Environment, variables: dict[str, Any]) -> str:
    return render_template(compile_file(path, env), variables)


def dry_render(path: Path, extra_dirs: Sequence[Path] = ()) -> list[Problem]:
    """Validate one template file: header, syntax, declared variables, sandboxed render."""
    env = _make_env([*extra_dirs, path.parent])
    try:
        info = inspect_template(path, env)
        render_file(path, env, {k: placeholder(k, t) for k, t in info.variables.items()})
    except CaiError as e:
        return e.problems
    return []

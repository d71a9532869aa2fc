"""Sandboxed rendering of the Jinja prompt templates.

Templates are shared like code but loaded like data: they render in Jinja's immutable sandbox
with StrictUndefined, no globals, no `attr`/`format` filters, and size limits on `*`/`**`, so a
template can neither reach Python internals nor stall a run. Each template starts with a header
comment declaring its variables::

    {#- cai
    description: what the template is for
    variables: {conversation: messages, question: text}
    -#}

Variable types (text, messages, list, number) let `cai validate` dry-render with placeholders.
"""

from __future__ import annotations

import hashlib
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from cai.errors import CaiError, Problem, did_you_mean, fail
from cai.paths import data_dir
from cai.yamlio import load_yaml, read_text

HEADER_RE = re.compile(r"\A\{#-?\s*cai[ \t]*\n(?P<body>.*?)-?#\}", re.DOTALL)
VAR_TYPES = ("text", "messages", "list", "number")
MAX_SEQUENCE = 200_000


class _LimitedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus bounds on operators that could exhaust memory or time."""

    intercepted_binops = frozenset({"*", "**", "+"})

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, int | float) and abs(right) > 64:
                raise SecurityError("exponent too large in template")
            return operator.pow(left, right)
        if operator_name == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > MAX_SEQUENCE:
                    raise SecurityError("sequence repetition too large in template")
            return operator.mul(left, right)
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
    for unsafe in ("attr", "format", "xmlattr", "map", "select", "reject", "selectattr",
                   "rejectattr", "groupby", "sum"):
        env.filters.pop(unsafe, None)
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
        return [{"role": "user", "content": f"<{name}: user>"},
                {"role": "assistant", "content": f"<{name}: assistant>"}]
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
            raise fail(str(info.path), 1, "variables",
                       f"template does not declare {', '.join(undeclared)}")
        return render_file(info.path, self._env, variables).strip()


def parse_header(path: Path, source: str) -> tuple[str, dict[str, str]]:
    m = HEADER_RE.match(source)
    if not m:
        raise fail(str(path), 1, "header",
                   "template must start with a '{#- cai ... -#}' header declaring its variables")
    doc = load_yaml(path, m.group("body"))
    data = doc.data
    if not isinstance(data, dict):
        raise fail(str(path), 2, "header", "header must be a mapping with description and variables")
    unknown = set(data) - {"description", "variables"}
    if unknown:
        key = sorted(unknown)[0]
        raise fail(str(path), doc.line((key,)) + 1, f"header.{key}", "unknown key",
                   did_you_mean(key, ["description", "variables"]))
    raw_vars = data.get("variables")
    if isinstance(raw_vars, list) and all(isinstance(v, str) for v in raw_vars):
        variables = {v: "text" for v in raw_vars}
    elif isinstance(raw_vars, dict):
        variables = {}
        for k, v in raw_vars.items():
            if v not in VAR_TYPES:
                raise fail(str(path), doc.line(("variables", k)) + 1, f"header.variables.{k}",
                           f"unknown type {v!r} (one of {', '.join(VAR_TYPES)})", did_you_mean(str(v), VAR_TYPES))
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
    used = meta.find_undeclared_variables(ast)
    extra = sorted(used - set(variables))
    if extra:
        line = next((i + 1 for i, text in enumerate(source.splitlines()) if extra[0] in text
                     and not text.lstrip().startswith("variables")), 1)
        raise fail(str(path), line, "variables", f"template uses undeclared variable {extra[0]!r}",
                   did_you_mean(extra[0], variables))
    refs = list(meta.find_referenced_templates(ast))
    if refs:
        raise fail(str(path), 1, "template", "include/extends/import are not allowed in prompt templates")
    digest = hashlib.sha256(source.encode()).hexdigest()
    return TemplateInfo(path.stem, path, description, variables, digest)


def render_file(path: Path, env: jinja2.Environment, variables: dict[str, Any]) -> str:
    source = read_text(path)
    try:
        template = env.from_string(source)
        template.filename = str(path)
        return template.render(**variables)
    except SecurityError as e:
        raise fail(str(path), template_lineno(e, "<template>"), "template", f"unsafe operation: {e}") from None
    except jinja2.UndefinedError as e:
        raise fail(str(path), template_lineno(e, "<template>"), "template", f"undefined: {e.message}") from None
    except jinja2.TemplateError as e:
        raise fail(str(path), template_lineno(e, "<template>"), "template", str(e)) from None
    except (TypeError, ValueError, OverflowError, RecursionError, MemoryError) as e:
        raise fail(str(path), template_lineno(e, "<template>"), "template",
                   f"render failed: {type(e).__name__}: {e}") from None


def dry_render(path: Path, extra_dirs: Sequence[Path] = ()) -> list[Problem]:
    """Validate one template file: header, syntax, declared variables, sandboxed render."""
    env = _make_env([*extra_dirs, path.parent])
    try:
        info = inspect_template(path, env)
        render_file(path, env, {k: placeholder(k, t) for k, t in info.variables.items()})
    except CaiError as e:
        return e.problems
    return []

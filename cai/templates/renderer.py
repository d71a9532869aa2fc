"""Rendering the Jinja prompt templates, inside the sandbox of `cai.templates.sandbox`.

Templates are shared like code but loaded like data (see the sandbox for what a template may
not do). Each template starts with a header comment declaring its variables::

    {#- cai
    description: what the template is for
    variables: {conversation: messages, question: text}
    -#}

Variable types (text, messages, list, number) let `cai validate` dry-render with placeholders.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import SecurityError

from cai.errors import CaiError, Problem, did_you_mean, fail
from cai.io.yamlio import load_yaml, read_text
from cai.paths import data_dir
from cai.templates import budget, sandbox

HEADER_RE = re.compile(r"\A\{#-?\s*cai[ \t]*\n(?P<body>.*?)-?#\}", re.DOTALL)
VAR_TYPES = ("text", "messages", "list", "number")


@dataclass(frozen=True)
class TemplateInfo:
    name: str
    path: Path
    description: str
    variables: dict[str, str]
    sha256: str


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
        self._env = sandbox.make_env(self.dirs)
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
        """The file of a template *name*: a plain name found inside one of the template folders,
        never a path that climbs out of them (``../../elsewhere/x``), an absolute one, or a link
        in a template folder that points outside it."""
        if not name or any(c in name for c in "/\\\0") or name.startswith(".") or name != name.strip():
            raise fail(name, None, "template", "a template is named by its file name without .jinja, not a path")
        for d in self.dirs:
            p = d / f"{name}.jinja"
            if p.is_file():
                if not p.resolve().is_relative_to(d):
                    raise fail(str(p), None, "template", f"links outside its template folder {d}; copy the file in")
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
            raise fail(str(info.path), 1, "variables", f"template does not declare {', '.join(undeclared)}")
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
        raise fail(str(path), 2, "header", "header must be a mapping with description and variables")
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
    except budget.TooLarge as e:  # a size limit, not an escape attempt: say which limit
        raise fail(where, template_lineno(e, where), "template", str(e)) from None
    except SecurityError as e:
        raise fail(where, template_lineno(e, where), "template", f"unsafe operation: {e}") from None
    except jinja2.UndefinedError as e:
        raise fail(where, template_lineno(e, where), "template", f"undefined: {e.message}") from None
    except jinja2.TemplateError as e:
        raise fail(where, template_lineno(e, where), "template", str(e.message or e)) from None
    except Exception as e:  # anything a template makes Python raise is the template's problem
        raise fail(where, template_lineno(e, where), "template", f"render failed: {type(e).__name__}: {e}") from None


def compile_file(path: Path, env: jinja2.Environment) -> jinja2.Template:
    """Parse and compile a template once, with a loop budget on every `for`."""
    source = read_text(path)
    where = str(path)
    with _as_template_error(where):
        ast = env.parse(source, filename=where)
        for loop in list(ast.find_all(nodes.For)):
            loop.iter = nodes.Filter(loop.iter, sandbox.BUDGET_FILTER, [], [], None, None, lineno=loop.lineno)
        template = env.from_string(ast)
        template.filename = where  # Jinja's rewritten tracebacks then point into this file
    return template


def render_template(template: jinja2.Template, variables: dict[str, Any]) -> str:
    """Render a compiled template under the per-render time and size budgets.

    The rendered text is at most `budget.MAX_PROMPT_CHARS` characters: the output is refused while
    it grows past that, not measured afterwards.
    """
    where = str(template.filename)
    with sandbox.time_limit(), _as_template_error(where):
        return template.render(**variables)


def render_file(path: Path, env: jinja2.Environment, variables: dict[str, Any]) -> str:
    return render_template(compile_file(path, env), variables)


def dry_render(path: Path, extra_dirs: Sequence[Path] = ()) -> list[Problem]:
    """Validate one template file: header, syntax, declared variables, sandboxed render."""
    env = sandbox.make_env([*extra_dirs, path.parent])
    try:
        info = inspect_template(path, env)
        render_file(path, env, {k: placeholder(k, t) for k, t in info.variables.items()})
    except CaiError as e:
        return e.problems
    return []

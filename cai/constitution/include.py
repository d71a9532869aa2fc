"""Constitution files with their includes, merged into one mapping that remembers its lines.

Include semantics: the child's mappings are merged key by key over its parent's; a list or a
scalar in the child replaces the parent's value. Relative paths (libraries, exemplar files,
template folders) are resolved against the file that wrote them before merging, so an included
constitution keeps working from anywhere. Cycles are reported with the chain that forms them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cai.errors import CaiError, fail
from cai.io.yamlio import YamlDoc, load_yaml
from cai.paths import resolve_named

MAX_INCLUDE_DEPTH = 16


# Dotted key (``critique.rounds``) → the file and line that set it, after merging.
Origins = dict[str, tuple[str, int]]


def read_merged(ref: str | Path) -> tuple[dict[str, Any], Origins, list[Path]]:
    """A constitution file and its includes, merged; returns data, where each key was set, and
    the chain of files from the root ancestor to `ref`'s own file."""
    return _read_chain(str(ref), [])


def _read_chain(ref: str, stack: list[Path]) -> tuple[dict[str, Any], Origins, list[Path]]:
    path = resolve_named(ref, "constitution", "constitution", None)
    if path in stack:
        cycle = " -> ".join(p.name for p in [*stack, path])
        first = stack[0]
        raise fail(str(first), _include_line(first), "include", f"include cycle: {cycle}")
    if len(stack) >= MAX_INCLUDE_DEPTH:
        raise fail(str(path), None, "include", f"includes nested deeper than {MAX_INCLUDE_DEPTH}")
    doc = _constitution_doc(path)
    data = _absolutize(doc, path.parent)
    origins = {".".join(map(str, k)): (str(path), v) for k, v in doc.lines.items()}
    if data.get("include") is None:
        return data, origins, [path]
    included = _included_path(doc, path, data["include"])
    parent, parent_origins, parent_chain = _read_chain(str(included), [*stack, path])
    data = _merge(parent, {k: v for k, v in data.items() if k != "include"})
    return data, {**parent_origins, **origins}, [*parent_chain, path]


def _constitution_doc(path: Path) -> YamlDoc:
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise fail(str(path), 1, "", "expected a mapping at the top of the file")
    if doc.data.get("kind") != "constitution":
        raise fail(
            str(path),
            doc.line(("kind",)),
            "kind",
            f"expected 'constitution', got {doc.data.get('kind')!r}",
        )
    return doc


def _included_path(doc: YamlDoc, path: Path, include: Any) -> Path:
    if not isinstance(include, str):
        raise fail(str(path), doc.line(("include",)), "include", "must be a constitution name or path")
    try:
        return _resolve_relative(include, "constitution", "constitution", path.parent)
    except CaiError as e:  # blame the `include:` line, not the missing name
        p = e.problems[0]
        raise fail(str(path), doc.line(("include",)), "include", f"{include}: {p.message}", p.hint) from None


def _resolve_relative(ref: str, folder: str, what: str, base: Path) -> Path:
    """A path written in a file means next to that file (never the current folder); else a name."""
    looks_like_path = any(s in ref for s in ("/", "\\")) or ref.endswith((".yaml", ".yml"))
    if looks_like_path and not Path(ref).is_absolute() and not (base / ref).is_file():
        raise fail(ref, None, what, f"no such file next to the file that names it ({base})")
    return resolve_named(ref, folder, what, base)


def _include_line(path: Path) -> int | None:
    try:
        return load_yaml(path).line(("include",))
    except CaiError:
        return None


def _absolutize(doc: YamlDoc, base: Path) -> dict[str, Any]:
    """Make the relative paths in one file absolute before it is merged with others."""
    data = dict(doc.data)
    if isinstance(data.get("libraries"), list):
        data["libraries"] = _absolute_libraries(doc, base, data["libraries"])
    if isinstance(data.get("template_dirs"), list):
        data["template_dirs"] = _absolute_template_dirs(doc, base, data["template_dirs"])
    if isinstance(data.get("demonstrations_file"), str):
        data["demonstrations_file"] = _absolute_file(doc, base, ("demonstrations_file",), data["demonstrations_file"])
    for section in ("critique", "comparison"):
        sec = data.get(section)
        if isinstance(sec, dict) and isinstance(sec.get("exemplars_file"), str):
            data[section] = {**sec, "exemplars_file": _absolute_exemplars(doc, base, section, sec["exemplars_file"])}
    return data


def _absolute_libraries(doc: YamlDoc, base: Path, libs: list[Any]) -> list[str]:
    out = []
    for i, ref in enumerate(libs):
        where = (doc.path, doc.line(("libraries", i)), f"libraries[{i}]")
        if not isinstance(ref, str):
            raise fail(*where, "must be a name or path")
        try:
            out.append(str(_resolve_relative(ref, "principles", "principle library", base)))
        except CaiError as e:
            p = e.problems[0]
            raise fail(*where, p.message, p.hint) from None
    return out


def _absolute_template_dirs(doc: YamlDoc, base: Path, dirs: list[Any]) -> list[Any]:
    for i, d in enumerate(dirs):
        if isinstance(d, str) and not (base / d).is_dir():  # a typo must not be ignored
            raise fail(doc.path, doc.line(("template_dirs", i)), f"template_dirs[{i}]", f"no such folder: {d}")
    return [str((base / d).resolve()) if isinstance(d, str) else d for d in dirs]


def _absolute_exemplars(doc: YamlDoc, base: Path, section: str, name: str) -> str:
    return _absolute_file(doc, base, (section, "exemplars_file"), name)


def _absolute_file(doc: YamlDoc, base: Path, key: tuple[str, ...], name: str) -> str:
    ex = base / name
    if not ex.is_file():
        raise fail(doc.path, doc.line(key), ".".join(key), f"no such file: {name}")
    return str(ex.resolve())


def _merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = dict(parent)
    for k, v in child.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out

"""`cai validate`: check data files without running anything they contain."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from cai.constitution import demonstrations
from cai.constitution.load import load_constitution, load_library
from cai.constitution.schema import KINDS, kind_of, parse_as
from cai.errors import CaiError, Problem
from cai.io.yamlio import load_yaml
from cai.templates.renderer import dry_render

YAML_SUFFIXES = (".yaml", ".yml")

# Other modules (recipes) register a validator for their own `kind:` here at call time,
# through `validate_paths(extra_kinds=...)`, rather than mutating a global table.
KindValidator = Callable[[Path], list[Problem]]


def expand(paths: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    files: list[Path] = []
    problems: list[Problem] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (*YAML_SUFFIXES, ".jinja"))
        elif p.is_file():
            if p.suffix in (*YAML_SUFFIXES, ".jinja"):
                files.append(p)
            else:
                problems.append(Problem(str(p), None, "", "not a .yaml, .yml or .jinja file"))
        else:
            problems.append(Problem(str(p), None, "", "no such file or folder"))
    return files, problems


def validate_file(
    path: Path, extra_kinds: dict[str, KindValidator] | None = None, warnings: list[Problem] | None = None
) -> list[Problem]:
    """The file's problems; `warnings` (when given) collects what is allowed but suspect: a
    demonstration prompt that is also an evaluation prompt."""
    warned = warnings if warnings is not None else []
    try:
        if path.suffix == ".jinja":
            return dry_render(path)
        doc = load_yaml(path)
        kinds = dict(extra_kinds or {})
        if isinstance(doc.data, dict) and str(doc.data.get("kind")) in kinds:
            return kinds[doc.data["kind"]](path)
        kind = kind_of(doc) if not kinds else _kind_with_extra(doc, kinds)
        if kind == "constitution":
            c = load_constitution(path)
            warned += demonstrations.eval_overlap(c.demonstrations)
            # Its templates may live in its own folders: dry-render them in the sandbox too.
            used = dict.fromkeys(c.renderer.path_of(n) for n in c.template_names().values())
            return [p for t in used for p in dry_render(t)]
        elif kind in ("critique-principles", "comparison-principles"):
            load_library(path)
        elif kind == "demonstrations":
            placed = demonstrations.read_file(path)
            warned += demonstrations.eval_overlap(placed)
            return demonstrations.duplicates(placed)
        else:
            parse_as(doc, KINDS[kind])
    except CaiError as e:
        return e.problems
    return []


def _kind_with_extra(doc, kinds: dict[str, KindValidator]) -> str:
    try:
        return kind_of(doc)
    except CaiError as e:
        p = e.problems[0]
        if p.field == "kind":
            p.message = p.message.replace(")", f", {', '.join(kinds)})", 1) if "(one of" in p.message else p.message
        raise


def validate_paths(
    paths: Iterable[str | Path],
    extra_kinds: dict[str, KindValidator] | None = None,
    warnings: list[Problem] | None = None,
) -> tuple[int, list[Problem]]:
    """(files checked, problems); `warnings`, when given, receives each warning once (a
    demonstrations file and the constitutions including it would repeat its warnings)."""
    files, problems = expand(paths)
    warned: list[Problem] = []
    for f in files:
        problems += validate_file(f, extra_kinds, warned)
    if warnings is not None:
        seen: set[str] = set()
        warnings += [w for w in warned if not (str(w) in seen or seen.add(str(w)))]
    return len(files), problems

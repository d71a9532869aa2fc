"""Constitutions from files: principle libraries, selection, exemplars and templates, checked.

`cai.constitution.include` reads a constitution with its includes into one mapping; this module
validates it against the schema and the libraries it lists and builds the `Constitution`.
Every mistake is reported at the file and line that made it, the included file's if need be,
and every mistake found is reported, not just the first: a check that can go on after one does
(the other ids, tags, exemplars and templates) collects its problems and raises them together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from cai.constitution.demonstrations import load_demonstrations
from cai.constitution.include import Origins, read_merged
from cai.constitution.model import Constitution, Versioned
from cai.constitution.schema import (
    ComparisonExemplarFile,
    ComparisonLibrary,
    ConstitutionSpec,
    CritiqueExemplarFile,
    CritiqueLibrary,
    Selection,
    parse_as,
    problems_from_validation,
)
from cai.errors import CaiError, Problem, did_you_mean, fail
from cai.io.yamlio import YamlDoc, dotted, load_yaml
from cai.templates.renderer import PromptRenderer

# A key path in the merged constitution → the file and line that set it (or its nearest parent).
LineOf = Callable[[tuple[Any, ...]], tuple[str, int | None]]
T = TypeVar("T")


def _gather(problems: list[Problem], step: Callable[[], T], default: T) -> T:
    """Run one check; its problems join `problems` and `default` stands in for its result."""
    try:
        return step()
    except CaiError as e:
        problems += e.problems
        return default


def load_library(path: Path) -> CritiqueLibrary | ComparisonLibrary:
    doc = load_yaml(path)
    kind = doc.data.get("kind") if isinstance(doc.data, dict) else None
    libraries = {"critique-principles": CritiqueLibrary, "comparison-principles": ComparisonLibrary}
    model = libraries.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise fail(
            str(path),
            doc.line(("kind",)),
            "kind",
            f"expected a principle library (critique-principles or comparison-principles), got {kind!r}",
        )
    lib = parse_as(doc, model)
    seen: dict[str, int] = {}
    problems = []
    for i, p in enumerate(lib.principles):
        if p.id in seen:
            problems.append(
                Problem(
                    str(path),
                    doc.line(("principles", i, "id")),
                    f"principles[{i}].id",
                    f"duplicate principle id {p.id!r} (first at principles[{seen[p.id]}])",
                )
            )
        seen.setdefault(p.id, i)
    if problems:
        raise CaiError(problems)
    return lib


def _select(
    sel: Selection, available: dict[str, Versioned], field_path: str, where: tuple[str, int | None]
) -> list[Versioned]:
    if not sel.ids and not sel.tags:
        return list(available.values())
    chosen: dict[str, Versioned] = {}
    problems = []
    for pid in sel.ids:
        if pid not in available:
            problems.append(
                Problem(*where, f"{field_path}.ids", f"unknown principle id {pid!r}", did_you_mean(pid, available))
            )
            continue
        chosen[pid] = available[pid]
    known_tags = {t for v in available.values() for t in v.principle.tags}
    for tag in sel.tags:
        if tag not in known_tags:
            problems.append(
                Problem(*where, f"{field_path}.tags", f"no principle has tag {tag!r}", did_you_mean(tag, known_tags))
            )
        for pid, v in available.items():
            if tag in v.principle.tags:
                chosen.setdefault(pid, v)
    if problems:
        raise CaiError(problems)
    # Keep library order so that sampling does not depend on how the selection was written.
    return [v for pid, v in available.items() if pid in chosen]


def load_constitution(ref: str | Path, extra_template_dirs: list[str] | None = None) -> Constitution:
    """Load a constitution by path or shipped name, with includes, libraries and exemplars."""
    data, origins, chain = read_merged(ref)
    top = chain[-1]
    line_of = _line_finder(origins, top)
    try:
        spec = ConstitutionSpec.model_validate(data)
    except ValidationError as err:
        raise CaiError(problems_from_validation(YamlDoc(str(top), data), err, ConstitutionSpec, line_of)) from None
    critique, comparison = _load_libraries(spec, line_of)
    # Each check below stands alone: run them all, then report every problem together.
    problems: list[Problem] = []
    critique_principles = _gather(
        problems,
        lambda: _select(spec.critique.principles, critique, "critique.principles", line_of(("critique", "principles"))),
        [],
    )
    comparison_principles = _gather(
        problems,
        lambda: _select(
            spec.comparison.principles, comparison, "comparison.principles", line_of(("comparison", "principles"))
        ),
        [],
    )
    critique_exemplars, comparison_exemplars = _all_exemplars(problems, spec, critique, comparison, line_of)
    demonstrations = _gather(
        problems, lambda: load_demonstrations(spec.demonstrations, spec.demonstrations_file, line_of), []
    )
    renderer = _gather(problems, lambda: _renderer(spec, extra_template_dirs, line_of), None)
    if problems or renderer is None:
        raise CaiError(problems)
    return Constitution(
        spec,
        top,
        [str(p) for p in chain],
        critique_principles=critique_principles,
        comparison_principles=comparison_principles,
        critique_exemplars=critique_exemplars,
        comparison_exemplars=comparison_exemplars,
        renderer=renderer,
        _all_critique=critique,
        _all_comparison=comparison,
        demonstrations=demonstrations,
    )


def _all_exemplars(
    problems: list[Problem], spec: ConstitutionSpec, critique: Any, comparison: Any, line_of: LineOf
) -> tuple[Any, Any]:
    """Both kinds of few-shot exemplars, each checked against its principles (problems collected)."""
    critique_exemplars = _gather(
        problems,
        lambda: _exemplars(
            "critique",
            spec.critique,
            CritiqueExemplarFile,
            critique,
            line_of,
            lambda ex: [(("rounds", j, "principle"), r.principle) for j, r in enumerate(ex.rounds)],
        ),
        [],
    )
    comparison_exemplars = _gather(
        problems,
        lambda: _exemplars(
            "comparison",
            spec.comparison,
            ComparisonExemplarFile,
            comparison,
            line_of,
            lambda ex: [(("principle",), ex.principle)],
        ),
        [],
    )
    return critique_exemplars, comparison_exemplars


def _line_finder(origins: Origins, top: Path) -> LineOf:
    def line_of(loc: tuple[Any, ...]) -> tuple[str, int | None]:
        key = list(map(str, loc))
        while key:
            if ".".join(key) in origins:
                return origins[".".join(key)]
            key.pop()
        return str(top), 1

    return line_of


def _load_libraries(spec: ConstitutionSpec, line_of: LineOf) -> tuple[dict[str, Versioned], dict[str, Versioned]]:
    """Every principle of the listed libraries by id: (critique, comparison)."""
    critique: dict[str, Versioned] = {}
    comparison: dict[str, Versioned] = {}
    problems: list[Problem] = []
    for i, lib_path in enumerate(spec.libraries):
        where = (*line_of(("libraries", i)), f"libraries[{i}]")
        try:
            lib = load_library(Path(lib_path))
        except CaiError as e:
            wrong = e.problems[0]
            if wrong.field != "kind":
                problems += e.problems
                continue
            # Not a library at all (say, a constitution): blame the line that lists it.
            problems.append(Problem(*where, f"{Path(lib_path).name}: {wrong.message}"))
            continue
        target = critique if isinstance(lib, CritiqueLibrary) else comparison
        for p in lib.principles:
            if p.id in target:
                problems.append(
                    Problem(
                        *where,
                        f"principle id {p.id!r} in {Path(lib_path).name} is also in {Path(target[p.id].source).name}",
                    )
                )
                continue
            target[p.id] = Versioned(p, p.version or lib.version, lib_path)
    if problems:  # selections and exemplars name these principles: checking them now would mislead
        raise CaiError(problems)
    if not critique:
        raise fail(*line_of(("libraries",)), "libraries", "no critique-principles library listed")
    if not comparison:
        raise fail(*line_of(("libraries",)), "libraries", "no comparison-principles library listed")
    return critique, comparison


def _exemplars(
    section: str,
    settings: Any,
    file_model: type,
    known: dict[str, Versioned],
    line_of: LineOf,
    refs: Callable[[Any], Iterable[tuple[tuple[Any, ...], str]]],
) -> list[Any]:
    """A section's inline exemplars then its file's, each principle they name checked.

    ``refs(exemplar)`` lists (key path inside the exemplar, principle id) for what it names.
    """
    inline = list(settings.exemplars)
    from_file, doc = _load_exemplars(settings.exemplars_file, file_model)
    exemplars = inline + from_file
    problems = []
    for i, ex in enumerate(exemplars):
        for tail, pid in refs(ex):
            if pid in known:
                continue
            if i < len(inline) or doc is None:
                loc: tuple[Any, ...] = (section, "exemplars", i, *tail)
                path, line = line_of(loc)
            else:
                loc = ("exemplars", i - len(inline), *tail)
                path, line = doc.path, doc.line(loc)
            problems.append(
                Problem(path, line, dotted(loc), f"unknown {section} principle {pid!r}", did_you_mean(pid, known))
            )
    if problems:
        raise CaiError(problems)
    return exemplars


def _load_exemplars(path: str | None, model: type) -> tuple[list[Any], YamlDoc | None]:
    if not path:
        return [], None
    doc = load_yaml(path)
    return list(parse_as(doc, model).exemplars), doc


def _renderer(spec: ConstitutionSpec, extra_dirs: list[str] | None, line_of: LineOf) -> PromptRenderer:
    """The renderer over the constitution's template folders, every template it names checked."""
    renderer = PromptRenderer([*(extra_dirs or []), *spec.template_dirs])
    known = renderer.names()
    problems: list[Problem] = []
    for role, name in spec.templates.model_dump().items():
        if name not in known:
            where = (*line_of(("templates", role)), f"templates.{role}")
            problems.append(Problem(*where, f"unknown template {name!r}", did_you_mean(name, known)))
            continue
        _gather(problems, lambda name=name: renderer.info(name), None)  # parses and checks the header now
    if problems:
        raise CaiError(problems)
    return renderer

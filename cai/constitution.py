"""Constitutions: load, merge includes, validate against principle libraries, fingerprint, sample.

Include semantics: the child's mappings are merged key by key over its parent's; a list or a
scalar in the child replaces the parent's value. Relative paths (libraries, exemplar files,
template folders) are resolved against the file that wrote them before merging, so an included
constitution keeps working from anywhere. Cycles are reported with the chain that forms them.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cai.errors import CaiError, Problem, did_you_mean, fail
from cai.paths import resolve_named
from cai.prompts import PromptRenderer
from cai.schema import (
    ComparisonExemplar,
    ComparisonExemplarFile,
    ComparisonLibrary,
    ComparisonPrinciple,
    ConstitutionSpec,
    CritiqueExemplar,
    CritiqueExemplarFile,
    CritiqueLibrary,
    CritiquePrinciple,
    Selection,
    parse_as,
    problems_from_validation,
)
from cai.yamlio import YamlDoc, dotted, load_yaml

MAX_INCLUDE_DEPTH = 16


@dataclass(frozen=True)
class Versioned:
    """A principle with its effective version and the file it came from."""

    principle: CritiquePrinciple | ComparisonPrinciple
    version: int
    source: str

    @property
    def id(self) -> str:
        return self.principle.id

    @property
    def ref(self) -> str:
        return f"{self.principle.id}@{self.version}"


@dataclass
class Constitution:
    spec: ConstitutionSpec
    path: Path
    chain: list[str]
    critique_principles: list[Versioned]
    comparison_principles: list[Versioned]
    critique_exemplars: list[CritiqueExemplar]
    comparison_exemplars: list[ComparisonExemplar]
    renderer: PromptRenderer
    _all_critique: dict[str, Versioned] = field(default_factory=dict, repr=False)
    _all_comparison: dict[str, Versioned] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def critique_principle(self, pid: str) -> Versioned:
        if pid in self._all_critique:
            return self._all_critique[pid]
        raise fail(
            str(self.path),
            None,
            "principle",
            f"unknown critique principle {pid!r}",
            did_you_mean(pid, self._all_critique),
        )

    def comparison_principle(self, pid: str) -> Versioned:
        if pid in self._all_comparison:
            return self._all_comparison[pid]
        raise fail(
            str(self.path),
            None,
            "principle",
            f"unknown comparison principle {pid!r}",
            did_you_mean(pid, self._all_comparison),
        )

    def template_names(self) -> dict[str, str]:
        return self.spec.templates.model_dump()

    def template_hashes(self) -> dict[str, str]:
        return {
            role: self.renderer.info(name).sha256 for role, name in self.template_names().items()
        }

    def resolved(self) -> dict[str, Any]:
        """The constitution after includes and selection: what `show` prints and the hash covers."""
        spec = self.spec.model_dump(exclude={"include", "libraries", "template_dirs"})
        spec["critique"].pop("exemplars_file", None)
        spec["comparison"].pop("exemplars_file", None)
        spec["critique"]["exemplars"] = [e.model_dump() for e in self.critique_exemplars]
        spec["comparison"]["exemplars"] = [e.model_dump() for e in self.comparison_exemplars]
        spec["critique"]["selected"] = [_principle_dict(v) for v in self.critique_principles]
        spec["comparison"]["selected"] = [_principle_dict(v) for v in self.comparison_principles]
        return spec

    def fingerprint(self) -> str:
        """Hash of the resolved constitution plus the text of every template it uses.

        Paths are left out on purpose: the same constitution copied elsewhere keeps its hash.
        """
        payload = {"constitution": self.resolved(), "templates": self.template_hashes()}
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def sample_critique(self, rng: random.Random, rounds: int | None = None) -> list[Versioned]:
        """Principles for the critique rounds of one prompt, drawn with the caller's RNG."""
        n = rounds or self.spec.critique.rounds
        pool = self.critique_principles
        if self.spec.critique.sampling.replace:
            return [rng.choice(pool) for _ in range(n)]
        # Without replacement: a fresh permutation each time the pool runs out.
        out: list[Versioned] = []
        while len(out) < n:
            out.extend(rng.sample(pool, len(pool)))
        return out[:n]

    def sample_comparison(self, rng: random.Random, k: int) -> list[Versioned]:
        pool = self.comparison_principles
        if k >= len(pool):
            return list(pool)
        return rng.sample(pool, k)


def _principle_dict(v: Versioned) -> dict[str, Any]:
    d = v.principle.model_dump(exclude={"version"})
    d["version"] = v.version
    return d


# ---------------------------------------------------------------------------------------- loading


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
            "expected a principle library (critique-principles or comparison-principles), "
            f"got {kind!r}",
        )
    lib = parse_as(doc, model)
    seen: dict[str, int] = {}
    for i, p in enumerate(lib.principles):
        if p.id in seen:
            raise fail(
                str(path),
                doc.line(("principles", i, "id")),
                f"principles[{i}].id",
                f"duplicate principle id {p.id!r} (first at principles[{seen[p.id]}])",
            )
        seen[p.id] = i
    return lib


def _raw_chain(
    ref: str, base: Path | None, stack: list[Path]
) -> tuple[dict[str, Any], dict[str, tuple[str, int]], list[Path]]:
    """Load a constitution file and its includes, merged; returns data, key→(file,line), chain."""
    path = resolve_named(ref, "constitution", "constitution", base)
    if path in stack:
        cycle = " -> ".join(p.name for p in [*stack, path])
        first = stack[0]
        raise fail(str(first), _include_line(first), "include", f"include cycle: {cycle}")
    if len(stack) >= MAX_INCLUDE_DEPTH:
        raise fail(str(path), None, "include", f"includes nested deeper than {MAX_INCLUDE_DEPTH}")
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
    data = _absolutize(doc, path.parent)
    origins = {".".join(map(str, k)): (str(path), v) for k, v in doc.lines.items()}
    include = data.get("include")
    chain = [path]
    if include is not None:
        if not isinstance(include, str):
            raise fail(
                str(path), doc.line(("include",)), "include", "must be a constitution name or path"
            )
        try:
            included = _resolve_relative(include, "constitution", "constitution", path.parent)
        except CaiError as e:  # blame the `include:` line, not the missing name
            p = e.problems[0]
            raise fail(
                str(path), doc.line(("include",)), "include", f"{include}: {p.message}", p.hint
            ) from None
        parent, parent_origins, parent_chain = _raw_chain(str(included), None, [*stack, path])
        data = _merge(parent, {k: v for k, v in data.items() if k != "include"})
        parent_origins.update(origins)
        origins = parent_origins
        chain = parent_chain + chain
    return data, origins, chain


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
    libs = data.get("libraries")
    if isinstance(libs, list):
        out = []
        for i, ref in enumerate(libs):
            if not isinstance(ref, str):
                raise fail(
                    doc.path,
                    doc.line(("libraries", i)),
                    f"libraries[{i}]",
                    "must be a name or path",
                )
            try:
                out.append(str(_resolve_relative(ref, "principles", "principle library", base)))
            except CaiError as e:
                p = e.problems[0]
                raise fail(
                    doc.path, doc.line(("libraries", i)), f"libraries[{i}]", p.message, p.hint
                ) from None
        data["libraries"] = out
    dirs = data.get("template_dirs")
    if isinstance(dirs, list):
        for i, d in enumerate(dirs):
            if isinstance(d, str) and not (base / d).is_dir():  # a typo must not be ignored
                raise fail(
                    doc.path,
                    doc.line(("template_dirs", i)),
                    f"template_dirs[{i}]",
                    f"no such folder: {d}",
                )
        data["template_dirs"] = [
            str((base / d).resolve()) if isinstance(d, str) else d for d in dirs
        ]
    for section in ("critique", "comparison"):
        sec = data.get(section)
        if isinstance(sec, dict) and isinstance(sec.get("exemplars_file"), str):
            sec = dict(sec)
            ex = base / sec["exemplars_file"]
            if not ex.is_file():
                raise fail(
                    doc.path,
                    doc.line((section, "exemplars_file")),
                    f"{section}.exemplars_file",
                    f"no such file: {sec['exemplars_file']}",
                )
            sec["exemplars_file"] = str(ex.resolve())
            data[section] = sec
    return data


def _merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = dict(parent)
    for k, v in child.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _select(
    sel: Selection, available: dict[str, Versioned], field_path: str, where: tuple[str, int | None]
) -> list[Versioned]:
    if not sel.ids and not sel.tags:
        return list(available.values())
    chosen: dict[str, Versioned] = {}
    for pid in sel.ids:
        if pid not in available:
            raise fail(
                where[0],
                where[1],
                f"{field_path}.ids",
                f"unknown principle id {pid!r}",
                did_you_mean(pid, available),
            )
        chosen[pid] = available[pid]
    known_tags = {t for v in available.values() for t in v.principle.tags}
    for tag in sel.tags:
        if tag not in known_tags:
            raise fail(
                where[0],
                where[1],
                f"{field_path}.tags",
                f"no principle has tag {tag!r}",
                did_you_mean(tag, known_tags),
            )
        for pid, v in available.items():
            if tag in v.principle.tags:
                chosen.setdefault(pid, v)
    # Keep library order so that sampling does not depend on how the selection was written.
    return [v for pid, v in available.items() if pid in chosen]


def load_constitution(
    ref: str | Path, extra_template_dirs: list[str] | None = None
) -> Constitution:
    """Load a constitution by path or shipped name, with includes, libraries and exemplars."""
    data, origins, chain = _raw_chain(str(ref), None, [])
    top = chain[-1]

    def line_of(loc: tuple) -> tuple[str, int | None]:
        key = list(map(str, loc))
        while key:
            if ".".join(key) in origins:
                return origins[".".join(key)]
            key.pop()
        return str(top), 1

    try:
        spec = ConstitutionSpec.model_validate(data)
    except ValidationError as err:
        raise CaiError(
            problems_from_validation(YamlDoc(str(top), data), err, ConstitutionSpec, line_of)
        ) from None

    critique: dict[str, Versioned] = {}
    comparison: dict[str, Versioned] = {}
    for i, lib_path in enumerate(spec.libraries):
        try:
            lib = load_library(Path(lib_path))
        except CaiError as e:
            wrong = e.problems[0]
            if wrong.field != "kind":
                raise
            # Not a library at all (say, a constitution): blame the line that lists it.
            raise fail(
                *line_of(("libraries", i)),
                f"libraries[{i}]",
                f"{Path(lib_path).name}: {wrong.message}",
            ) from None
        target = critique if isinstance(lib, CritiqueLibrary) else comparison
        for p in lib.principles:
            if p.id in target:
                f, line = line_of(("libraries", i))
                raise fail(
                    f,
                    line,
                    f"libraries[{i}]",
                    f"principle id {p.id!r} in {Path(lib_path).name} "
                    f"is also in {Path(target[p.id].source).name}",
                )
            target[p.id] = Versioned(p, p.version or lib.version, lib_path)

    if not critique:
        raise fail(*line_of(("libraries",)), "libraries", "no critique-principles library listed")
    if not comparison:
        raise fail(*line_of(("libraries",)), "libraries", "no comparison-principles library listed")
    crit_sel = _select(
        spec.critique.principles,
        critique,
        "critique.principles",
        line_of(("critique", "principles")),
    )
    comp_sel = _select(
        spec.comparison.principles,
        comparison,
        "comparison.principles",
        line_of(("comparison", "principles")),
    )

    crit_file, crit_doc = _load_exemplars(spec.critique.exemplars_file, CritiqueExemplarFile)
    comp_file, comp_doc = _load_exemplars(spec.comparison.exemplars_file, ComparisonExemplarFile)
    crit_ex = list(spec.critique.exemplars) + crit_file
    comp_ex = list(spec.comparison.exemplars) + comp_file

    def exemplar_where(
        section: str, n_inline: int, doc: YamlDoc | None, i: int, tail: tuple
    ) -> tuple[str, int | None, str]:
        """File, line and field of exemplar `i`: inline in the constitution or in its file."""
        if i < n_inline or doc is None:
            loc = (section, "exemplars", i, *tail)
            return (*line_of(loc), dotted(loc))
        loc = ("exemplars", i - n_inline, *tail)
        return doc.path, doc.line(loc), dotted(loc)

    for i, ex in enumerate(crit_ex):
        for j, r in enumerate(ex.rounds):
            if r.principle not in critique:
                f, line, name = exemplar_where(
                    "critique",
                    len(spec.critique.exemplars),
                    crit_doc,
                    i,
                    ("rounds", j, "principle"),
                )
                raise fail(
                    f,
                    line,
                    name,
                    f"unknown critique principle {r.principle!r}",
                    did_you_mean(r.principle, critique),
                )
    for i, ex in enumerate(comp_ex):
        if ex.principle not in comparison:
            f, line, name = exemplar_where(
                "comparison", len(spec.comparison.exemplars), comp_doc, i, ("principle",)
            )
            raise fail(
                f,
                line,
                name,
                f"unknown comparison principle {ex.principle!r}",
                did_you_mean(ex.principle, comparison),
            )

    renderer = PromptRenderer([*(extra_template_dirs or []), *spec.template_dirs])
    known = renderer.names()
    for role, name in spec.templates.model_dump().items():
        if name not in known:
            f, line = line_of(("templates", role))
            raise fail(
                f,
                line,
                f"templates.{role}",
                f"unknown template {name!r}",
                did_you_mean(name, known),
            )
        renderer.info(name)  # parses and checks the header now, not mid-run

    return Constitution(
        spec,
        top,
        [str(p) for p in chain],
        crit_sel,
        comp_sel,
        crit_ex,
        comp_ex,
        renderer,
        critique,
        comparison,
    )


def _load_exemplars(path: str | None, model: type) -> tuple[list[Any], YamlDoc | None]:
    if not path:
        return [], None
    doc = load_yaml(path)
    return list(parse_as(doc, model).exemplars), doc


def validate_file_problems(path: Path) -> list[Problem]:
    try:
        load_constitution(path)
    except CaiError as e:
        return e.problems
    return []

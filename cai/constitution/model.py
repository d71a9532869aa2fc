"""The loaded constitution: selected principles, exemplars, templates, and its fingerprint.

`cai.constitution.load` builds these from files; everything downstream (stages, diff, preview)
only reads them, so they live apart from the loading machinery.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cai.constitution.demonstrations import Placed
from cai.constitution.schema import (
    ComparisonExemplar,
    ComparisonPrinciple,
    ConstitutionSpec,
    CritiqueExemplar,
    CritiquePrinciple,
)
from cai.errors import did_you_mean, fail
from cai.templates.renderer import PromptRenderer


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
    # Inline ones first, then the file's; each knows the file and line it was written at.
    demonstrations: list[Placed] = field(default_factory=list, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def critique_principle(self, pid: str) -> Versioned:
        return self._lookup("critique", self._all_critique, pid)

    def comparison_principle(self, pid: str) -> Versioned:
        return self._lookup("comparison", self._all_comparison, pid)

    def _lookup(self, kind: str, table: dict[str, Versioned], pid: str) -> Versioned:
        """Any principle of the listed libraries, selected or not (exemplars and previews may name others)."""
        if pid in table:
            return table[pid]
        raise fail(str(self.path), None, "principle", f"unknown {kind} principle {pid!r}", did_you_mean(pid, table))

    def template_names(self) -> dict[str, str]:
        return self.spec.templates.model_dump()

    def template_hashes(self) -> dict[str, str]:
        return {role: self.renderer.info(name).sha256 for role, name in self.template_names().items()}

    def resolved(self) -> dict[str, Any]:
        """The constitution after includes and selection: what `show` prints and the hash covers."""
        spec = self.spec.model_dump(exclude={"include", "libraries", "template_dirs", "demonstrations_file"})
        # Left out when there are none, so constitutions without them keep their fingerprint.
        spec.pop("demonstrations")
        if self.demonstrations:
            spec["demonstrations"] = [p.demo.model_dump() for p in self.demonstrations]
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

"""HTML pieces every report section shares: reading run files, tables, how numbers read."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from cai.io.outputs import read_output, read_output_lines
from cai.io.readers import read_json_file
from cai.outputs import Difference, Output, OutT, Rate
from cai.redact import redact


@dataclass
class RunView:
    """A run folder as the report reads it: its recipe (redacted), the names of the policies its
    stages train (from the stage registry), every run file read at most once (cached here), and the
    figures the page carries as JSON, which each section adds to. Sections take this, never a path."""

    run: Path
    recipe: dict[str, Any]
    policy_labels: Mapping[str, str]  # stage -> what the report calls the policy it trains
    data: dict[str, Any] = field(default_factory=dict)
    _files: dict[str, Output | list[Output] | None] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, run: Path, policy_labels: Mapping[str, str], secrets: Iterable[str]) -> RunView:
        """The view of `run` with its recipe read once and redacted: sections see only this copy,
        never the keys a run folder written before redaction may still hold."""
        recipe = redact(read_json(run / "recipe.json") or {}, secrets)
        return cls(run, recipe, policy_labels)

    def output(self, rel: str, kind: type[OutT]) -> OutT | None:
        """A run file (``"label/summary.json"``) as `kind`, or None while its stage has not written it."""
        if rel not in self._files:
            path = self.run / rel
            self._files[rel] = read_output(kind, path) if path.is_file() else None
        return cast("OutT | None", self._files[rel])

    def records(self, rel: str, kind: type[OutT]) -> list[OutT]:
        """A run file's complete records as `kind`, [] before the first; shared between sections."""
        if rel not in self._files:
            self._files[rel] = list(read_output_lines(kind, self.run / rel))
        return cast("list[OutT]", self._files[rel])


def read_json(path: Path) -> Any:
    """A run file's JSON, or None while the stage that writes it has not run."""
    return read_json_file(path) if path.is_file() else None


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "—" if v is None else str(v)


def table(headers: list[str], rows: list[list[Any]], cls: str | None = None) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    attr = f" class='{cls}'" if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def number(v: Any) -> float | None:
    """A logged value as a float; None for a missing one or one JSON could not hold (NaN as text)."""
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def rate_ci(x: Rate | None) -> str:
    """A measured rate as `k/n = rate [lo, hi]` (its 95% interval), "—" when not measured."""
    if x is None or x.rate is None:
        return "—"
    ci = f" [{x.lo:.3f}, {x.hi:.3f}]" if x.lo is not None and x.hi is not None else ""
    return f"{x.k}/{x.n} = {x.rate:.3f}{ci}"


def diff_ci(x: Difference | None) -> str:
    """A difference of rates as `d [lo, hi]` with signs, "—" when there is nothing to compare."""
    if x is None or x.d is None:
        return "—"
    ci = f" [{x.lo:+.3f}, {x.hi:+.3f}]" if x.lo is not None and x.hi is not None else ""
    return f"{x.d:+.3f}{ci}"

"""A constitution's demonstrations: author-written prompts with the ideal reply, checked.

Small policies only learn what they are shown (the embedded model never refuses on its own), so
a constitution may carry demonstrations of the behaviour it asks for: harmful requests declined
briefly with a safe alternative (`kind: decline`), and safe requests that only sound alarming
answered in full (`kind: answer`), so that SL-CAI does not teach over-refusal. `cai critique`
adds them to the SFT export (`CritiqueSettings.demonstrations`).

Checks: blank fields and wrong types are schema errors; two demonstrations with the same prompt
(compared as `normalise`d text) are an error at the second; a prompt that is also in a shipped
evaluation set (`EVAL_SETS`) is a warning from `cai validate`, since training on it would make
that evaluation measure memorised text.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cai.constitution.schema import Demonstration, DemonstrationFile, parse_as
from cai.errors import CaiError, Problem, fail
from cai.io.readers import iter_jsonl
from cai.io.yamlio import load_yaml
from cai.paths import data_dir

LineOf = Callable[[tuple[Any, ...]], tuple[str, int | None]]

RED_TEAM_EVAL_SKIP = 80
"""The shipped recipes evaluate on ``red-team`` from this row on (quickstart: rows 80-103, the
gpu and api-judge recipes 96-111, `benchmarks/harmless_demonstrations.py` 80-111); earlier rows
feed the critique, label and RL stages. A test holds the recipes to it."""


def normalise(text: str) -> str:
    """Text as the duplicate and overlap checks compare it: lowercase word characters only."""
    return " ".join(re.findall(r"\w+", text.lower()))


@dataclass(frozen=True)
class Placed:
    """A demonstration and where it was written (for errors and warnings)."""

    demo: Demonstration
    path: str
    line: int | None
    field: str  # e.g. demonstrations[3]

    @property
    def id(self) -> str:
        """A stable id from the prompt's normalised text: editing the reply keeps it."""
        return "demo-" + hashlib.sha256(normalise(self.demo.prompt).encode()).hexdigest()[:12]


def load_demonstrations(inline: list[Demonstration], file: str | None, line_of: LineOf) -> list[Placed]:
    """The constitution's inline demonstrations, then its file's; duplicates are errors."""
    placed = [
        Placed(d, *line_of(("demonstrations", i, "prompt")), f"demonstrations[{i}]") for i, d in enumerate(inline)
    ]
    if file:
        placed += read_file(Path(file))
    problems = duplicates(placed)
    if problems:
        raise CaiError(problems)
    return placed


def read_file(path: Path) -> list[Placed]:
    """A ``kind: demonstrations`` file, each entry with its line."""
    doc = load_yaml(path)
    kind = doc.data.get("kind") if isinstance(doc.data, dict) else None
    if isinstance(doc.data, dict) and kind != "demonstrations":  # one line, not one per other field
        raise fail(str(path), doc.line(("kind",)), "kind", f"wrong kind {kind!r}: expected 'demonstrations'")
    parsed = parse_as(doc, DemonstrationFile)
    return [
        Placed(d, str(path), doc.line(("demonstrations", i, "prompt")), f"demonstrations[{i}]")
        for i, d in enumerate(parsed.demonstrations)
    ]


def duplicates(placed: list[Placed]) -> list[Problem]:
    """One problem per demonstration whose prompt an earlier one already has."""
    first: dict[str, Placed] = {}
    out = []
    for p in placed:
        key = normalise(p.demo.prompt)
        if key in first:
            f = first[key]
            where = f.field if f.path == p.path else f"{Path(f.path).name}:{f.line} {f.field}"
            message = f"duplicate demonstration prompt (first at {where})"
            out.append(Problem(p.path, p.line, f"{p.field}.prompt", message))
        first.setdefault(key, p)
    return out


# ----------------------------------------------------------------------- evaluation overlap


def _user_turns(row: dict[str, Any]) -> Iterator[str]:
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        yield prompt
    elif isinstance(prompt, list):
        yield from (m["content"] for m in prompt if isinstance(m, dict) and m.get("role") == "user")


def eval_prompts() -> dict[str, str]:
    """Normalised prompt → "set (row id)" for every shipped evaluation slice: red-team from
    `RED_TEAM_EVAL_SKIP` on, all of safe-lookalike and of the two plain-style sets, and judge-dev's
    test split."""
    folder = data_dir("data")
    out: dict[str, str] = {}
    sets = [
        ("red-team eval slice", "red_team.jsonl", lambda i, r: i >= RED_TEAM_EVAL_SKIP),
        ("safe-lookalike", "safe_lookalike.jsonl", lambda i, r: True),
        ("red-team-plain", "red_team_plain.jsonl", lambda i, r: True),
        ("safe-lookalike-plain", "safe_lookalike_plain.jsonl", lambda i, r: True),
        ("judge-dev test split", "judge_dev.jsonl", lambda i, r: r.get("split") == "test"),
    ]
    for name, file, keep in sets:
        path = folder / file
        if not path.is_file():
            continue
        for i, (_line, row) in enumerate(iter_jsonl(path)):
            if keep(i, row):
                for text in _user_turns(row):
                    out.setdefault(normalise(text), f"{name} ({row.get('id', f'row {i + 1}')})")
    return out


def eval_overlap(placed: list[Placed]) -> list[Problem]:
    """Warnings (as problems) for demonstrations whose prompt is also an evaluation prompt."""
    evals = eval_prompts()
    return [
        Problem(
            p.path,
            p.line,
            f"{p.field}.prompt",
            f"also in {evals[normalise(p.demo.prompt)]}: training on it makes that evaluation measure memorised text",
        )
        for p in placed
        if normalise(p.demo.prompt) in evals
    ]


def select(placed: list[Placed], n: int | None, answers: float = 0.5) -> list[Placed]:
    """At most `n` demonstrations (all when None), each kind in file order: a share `answers` of
    them answers (rounded), the rest declines, topped up from the other kind when one runs
    short; declines and answers alternate while both last, so every prefix stays mixed."""
    kinds = [[p for p in placed if p.demo.kind == k] for k in ("decline", "answer")]
    if n is not None:
        # Half rounds up (Python's round() goes to even, which would flip between odd counts).
        want_answers = min(len(kinds[1]), max(n - len(kinds[0]), math.floor(n * answers + 0.5)))
        kinds = [kinds[0][: n - want_answers], kinds[1][:want_answers]]
    return _spread(*kinds)


def _spread(declines: list[Placed], answers: list[Placed]) -> list[Placed]:
    """The two kinds interleaved in proportion (2 answers per decline when there are twice as
    many), each in its own order."""
    out: list[Placed] = []
    d = a = 0
    while d < len(declines) or a < len(answers):
        # Each kind's next row sits at (index + ½) / count of the way through its kind: take the
        # one that comes first (a decline on a tie), so equal counts alternate decline, answer.
        if d >= len(declines) or (a < len(answers) and (a + 0.5) * len(declines) < (d + 0.5) * len(answers)):
            out.append(answers[a])
            a += 1
        else:
            out.append(declines[d])
            d += 1
    return out

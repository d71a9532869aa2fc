"""The bad-input corpus (`tests/fixtures/bad_inputs/cases.yaml`): every command that reads a file
or takes options, given something wrong, through the real CLI entry point (in-process, fake
models only).

The error contract for each case: exit code 2; stderr is exactly one non-empty line (for
`cai validate`, one problem line and its "N problem(s) in M file(s)" summary) containing the
case's expected text; no traceback; and nothing half-written: every file under the case's
folder is byte for byte what the case set up, and no new file exists.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import Result, invoke

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bad_inputs"
DEEP = "[" * 100_000 + "]" * 100_000 + "\n"
SUMMARY_RE = re.compile(r"^\d+ problem\(s\) in \d+ file\(s\)$")

# The finished runs `from_run` copies: made once per session with the fake model.
BASE_RUNS = {
    "critique": "critique --model fake --out {out} --prompts {fx}/prompts_ok.jsonl --limit 2 --quiet",
    "label": "label --judge fake --out {out} --pairs {fx}/pairs_ok.jsonl --quiet",
    "recipe": "run {fx}/recipe_ok.yaml --out {out} --quiet --no-report",
}


@dataclass(frozen=True)
class Case:
    id: str
    argv: str
    expect: str
    from_run: str | None = None
    dirs: tuple[str, ...] = ()
    files: tuple[tuple[str, str], ...] = ()
    pending: str | None = None  # the fix lives in a file owned elsewhere: strict xfail until then
    fifos: tuple[str, ...] = ()  # named pipes under {tmp}: a reader that opens one would block

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Case:
        unknown = set(raw) - {"id", "argv", "expect", "from_run", "dirs", "files", "pending", "fifos"}
        assert not unknown, f"{raw.get('id')}: unknown keys {unknown}"
        return cls(
            raw["id"],
            raw["argv"],
            raw["expect"],
            raw.get("from_run"),
            tuple(raw.get("dirs", ())),
            tuple((raw.get("files") or {}).items()),
            raw.get("pending"),
            tuple(raw.get("fifos", ())),
        )

    def args(self, tmp: Path) -> list[str]:
        return [a.format(fx=FIXTURES, tmp=tmp, out=tmp / "out") for a in shlex.split(self.argv)]


def load_cases() -> list[Case]:
    """Every case of ``cases.yaml`` and of each ``cases_*.yaml`` beside it (one file per kind of
    input, so that the corpus can grow in several places at once)."""
    files = [FIXTURES / "cases.yaml", *sorted(FIXTURES.glob("cases_*.yaml"))]
    cases = [Case.parse(c) for f in files for c in yaml.safe_load(f.read_text(encoding="utf-8"))["cases"]]
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return cases


CASES = load_cases()


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under root, by relative path."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="session")
def base_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad-inputs-base")
    made = {}
    for name, argv in BASE_RUNS.items():
        out = root / name
        r = invoke(*[a.format(fx=FIXTURES, out=out) for a in shlex.split(argv)])
        assert r.code == 0, f"base run {name} failed: {r.stderr}"
        made[name] = out
    return made


def set_up(case: Case, tmp: Path, base_runs: dict[str, Path]) -> None:
    if case.from_run:
        shutil.copytree(base_runs[case.from_run], tmp / "out")
    for d in case.dirs:
        (tmp / d).mkdir(parents=True)
    for rel, text in case.files:
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(DEEP if text == "@DEEP@" else text, encoding="utf-8", errors="surrogateescape")
    for rel in case.fifos:
        os.mkfifo(tmp / rel)


def run_case(case: Case, tmp: Path, base_runs: dict[str, Path]) -> tuple[Result, dict[str, bytes | None]]:
    set_up(case, tmp, base_runs)
    before = snapshot(tmp)
    return invoke(*case.args(tmp), cwd=tmp), before


def problem_lines(case: Case, r: Result) -> list[str]:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    if case.argv.startswith("validate") and lines and SUMMARY_RE.match(lines[-1]):
        lines = lines[:-1]
    return lines


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 80
    commands = {
        c.argv.split()[0] if c.argv.split()[0] not in ("train", "eval") else " ".join(c.argv.split()[:2]) for c in CASES
    }
    assert commands >= {
        "critique",
        "try",
        "label",
        "judge-eval",
        "merge",
        "run",
        "report",
        "validate",
        "train sft",
        "train pm",
        "train ppo",
        "eval policy",
    }


def _param(c: Case) -> Any:
    marks = [pytest.mark.xfail(reason=f"needs: {c.pending}", strict=True)] if c.pending else []
    return pytest.param(c, id=c.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, base_runs: dict[str, Path]) -> None:
    r, before = run_case(case, tmp_path, base_runs)
    assert "Traceback" not in r.stderr + r.stdout
    assert r.code == 2, f"exit {r.code}; stderr: {r.stderr!r}"
    lines = problem_lines(case, r)
    assert len(lines) == 1, f"expected one line, got: {r.stderr!r}"
    assert case.expect in lines[0], f"{case.expect!r} not in {lines[0]!r}"
    assert snapshot(tmp_path) == before, "the command wrote or changed files"

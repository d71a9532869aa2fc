"""The report reads a run folder through one `RunView`: every run file is opened at most once,
however many sections (and warnings) use it."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from cai.run.report import build_report
from tests.helpers import run_fake_recipe

# Audit hooks cannot be removed: one per test process, switched on only inside `_opens`.
_SEEN: list[str] = []
_ACTIVE: list[bool] = []


def _hook(event: str, args: tuple) -> None:
    if _ACTIVE and event == "open" and isinstance(args[0], str | Path):
        _SEEN.append(str(args[0]))


def _opens(run: Path) -> tuple[str, Counter[str]]:
    if not getattr(sys, "_cai_report_hook", False):
        sys.addaudithook(_hook)
        sys._cai_report_hook = True  # type: ignore[attr-defined]
    _SEEN.clear()
    _ACTIVE.append(True)
    try:
        page = build_report(run)
    finally:
        _ACTIVE.clear()
    inside = [Path(p).resolve() for p in _SEEN if Path(p).resolve().is_relative_to(run.resolve())]
    return page, Counter(p.relative_to(run.resolve()).as_posix() for p in inside)


def _ppo(run: Path) -> None:
    """A finished RL stage's logs, as `cai train ppo` writes them (two updates)."""
    model = run / "ppo" / "model"
    model.mkdir(parents=True)
    rows = [{"step": i, "reward": 0.1 * i, "kl": 0.01 * i, "objective/entropy": 1.0} for i in (1, 2)]
    (model / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (model / "cai_train.json").write_text(json.dumps({"kind": "ppo", "settings": {"algorithm": "rloo"}}))


def test_every_run_file_is_read_once(tmp_path: Path) -> None:
    run = run_fake_recipe(tmp_path / "run", limit=2)
    _ppo(run)
    page, opened = _opens(run)
    assert "Reinforcement learning (rloo)" in page and "Where the labels come from" in page
    # Read by several sections (and the warnings) before, once now.
    for shared in ("label/summary.json", "label/records.jsonl", "eval/summary.json", "ppo/model/metrics.jsonl"):
        assert opened[shared] == 1, (shared, opened)
    assert max(opened.values()) == 1, opened

"""`cai run`'s gate before training on labels: it warns before the pm stage when the label
method's measured agreement with people is near chance, before ppo when the PM's held-out
accuracy is, stops there when the recipe says ``gate: stop``, and stays quiet otherwise.

Critique and label run for real on the fake model; the pm and ppo stages are stand-ins that
write what the real ones write (a PM record with held-out accuracy; a marker), so the test is
about the pipeline, not training. The shipped agreement table only knows the embedded judge, so
the measured figure is set by the test.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cai.run.context import RunContext
from cai.run.gate import near_chance
from cai.run.registry import BUILTIN, StageRegistry, use_stages
from tests.helpers import invoke


def _pm_standin(accuracy: float, n: int) -> Any:
    def run(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
        summary = {"eval_accuracy_after": accuracy, "rows": {"eval": n}}
        (out / "model").mkdir()
        (out / "model" / "cai_train.json").write_text(json.dumps({"kind": "pm", "summary": summary}))
        return summary

    return run


def _ppo_standin(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    (out / "model").mkdir()
    (out / "model" / "cai_train.json").write_text(json.dumps({"kind": "rloo", "summary": {}}))
    return {}


def _registry(accuracy: float, n: int = 200) -> StageRegistry:
    stand_ins = {"pm": _pm_standin(accuracy, n), "ppo": _ppo_standin}
    return StageRegistry(tuple(replace(s, run=stand_ins[s.name]) if s.name in stand_ins else s for s in BUILTIN))


@pytest.fixture
def agreement(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Set what judge-dev says of the run's label method: (agreement, n), or None (unmeasured)."""

    def set_to(figure: tuple[float, int] | None) -> None:
        def measured(judge: Any, method: str, *args: Any) -> dict[str, Any] | None:
            if figure is None:
                return None
            rate, n = figure
            return {"method": method, "agreement": rate, "n": n, "split": "test", "per_pair": "one", "mc": 0.48}

        monkeypatch.setattr("cai.stages.judge_eval.measured_agreement", measured)

    return set_to


def _run(tmp_path: Path, *sets: str, accuracy: float = 0.8, n: int = 200) -> tuple[Any, Path]:
    recipe = tmp_path / "gated.yaml"
    recipe.write_text(
        "kind: recipe\nname: gated\nmodels: {policy: fake, judge: fake}\nstages:\n"
        "  critique: {limit: 2, rounds: 1}\n  label: {limit: 2, method: contrast}\n  pm: {}\n  ppo: {limit: 2}\n"
    )
    out = tmp_path / "run"
    args = [a for s in sets for a in ("--set", s)]
    with use_stages(_registry(accuracy, n)):
        result = invoke("run", str(recipe), "--out", str(out), "--quiet", "--no-report", *args)
    return result, out


def _warnings(out: Path) -> list[str]:
    return [line for line in (out / "log.txt").read_text().splitlines() if "warning: gate" in line]


def test_near_chance_is_below_the_bar_or_an_interval_holding_a_coin() -> None:
    assert near_chance(0.5593, 177) is not None  # the shipped contrast (mean) figure: [0.486, 0.630]
    assert near_chance(0.53, 2000) is not None  # narrow interval, but below 0.55
    assert near_chance(0.70, 177) is None


def test_labels_near_chance_warn_before_pm_and_the_run_goes_on(tmp_path: Path, agreement: Any) -> None:
    agreement((0.5593, 177))
    result, out = _run(tmp_path)
    assert result.code == 0, result.stderr
    [line] = _warnings(out)
    assert "gate before pm: the labels' method (contrast" in line and "55.9%" in line and "n=177" in line
    log = (out / "log.txt").read_text()
    assert log.index("warning: gate before pm") < log.index("pm: starting")
    gate = json.loads((out / "gate.json").read_text())
    assert gate["pm"]["stopped"] is False and gate["pm"]["findings"][0]["check"] == "labels"
    assert (out / "ppo" / "model" / "cai_train.json").is_file()

    report = invoke("report", str(out))
    assert report.code == 0, report.stderr
    page = (out / "report.html").read_text()
    assert "data-warn='labels-chance'" in page and "cai run's gate warned before the pm stage" in page


def test_gate_stop_ends_the_run_before_pm_with_one_line(tmp_path: Path, agreement: Any) -> None:
    agreement((0.5593, 177))
    result, out = _run(tmp_path, "gate=stop")
    assert result.code == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"{out}: gate: the labels' method") and "Stopped before the pm stage" in line
    assert not (out / "pm").exists() and not (out / "ppo").exists()  # nothing of the stopped stage
    assert json.loads((out / "label" / "stage.json").read_text())["status"] == "done"
    assert json.loads((out / "gate.json").read_text())["pm"]["stopped"] is True
    # Told to warn instead, the same folder goes on from where it stopped.
    again, _ = _run(tmp_path)
    assert again.code == 0 and "label: done already" in (out / "log.txt").read_text()


def test_a_pm_near_chance_stops_the_run_before_rl(tmp_path: Path, agreement: Any) -> None:
    agreement((0.70, 177))
    result, out = _run(tmp_path, "gate=stop", accuracy=0.52, n=60)
    assert result.code == 2 and "the PM ranks 52.0% of its 60 held-out pairs right" in result.stderr
    assert "Stopped before the ppo stage" in result.stderr and not (out / "ppo").exists()
    assert (out / "pm" / "model" / "cai_train.json").is_file()
    assert set(json.loads((out / "gate.json").read_text())) == {"ppo"}


@pytest.mark.parametrize("figure", [(0.70, 177), None], ids=["measured-well", "not-measured"])
def test_the_gate_is_quiet_when_the_signal_is_not_near_chance(
    tmp_path: Path, agreement: Any, figure: tuple[float, int] | None
) -> None:
    agreement(figure)
    result, out = _run(tmp_path, "gate=stop", accuracy=0.8, n=200)
    assert result.code == 0, result.stderr
    assert _warnings(out) == [] and not (out / "gate.json").exists()


def test_gate_off_does_not_look(tmp_path: Path, agreement: Any) -> None:
    agreement((0.5, 177))
    result, out = _run(tmp_path, "gate=off", accuracy=0.5, n=60)
    assert result.code == 0 and _warnings(out) == [] and not (out / "gate.json").exists()


@pytest.mark.parametrize(
    ("stages", "stopped"),
    [
        ("  pm: {}\n  ppo: {limit: 2, reward: direct}\n", False),  # RL that never reads the PM
        ("  pm: {}\n  ppo: {limit: 2, reward: {pm: 1.0, direct: 0.5}}\n", True),  # RL that does
    ],
    ids=["direct-reward", "pm-in-the-sum"],
)
def test_a_pm_near_chance_stops_only_rl_that_optimises_it(
    tmp_path: Path, agreement: Any, stages: str, stopped: bool
) -> None:
    agreement((0.70, 177))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "kind: recipe\nname: gated\ngate: stop\nmodels: {policy: fake, judge: fake}\nstages:\n"
        "  critique: {limit: 2, rounds: 1}\n  label: {limit: 2, method: contrast}\n" + stages
    )
    out = tmp_path / "run"
    with use_stages(_registry(0.52, 60)):
        result = invoke("run", str(recipe), "--out", str(out), "--quiet", "--no-report")
    assert (result.code == 2) is stopped, result.stderr
    assert ("the PM ranks 52.0%" in result.stderr) is stopped and (out / "gate.json").exists() is stopped
    # Evaluation is never gated: it reads the PM only to report its scores.
    from cai.run.gate import findings_before
    from cai.run.sections import EvalStage

    assert findings_before(out, BUILTIN["eval"], EvalStage()) == []

"""judge-eval: a position-driven judge is reported as such; a good judge is not; figures add up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cai.constitution.load import load_constitution
from cai.constitution.model import Constitution
from cai.io.pairs import Pair, load_pairs
from cai.stages.judge_eval import (
    evaluate_judge,
    format_report,
    helpful_principles,
    judge_items,
    narrow,
    write_eval,
)
from cai.stages.settings import JudgeSettings
from tests.doubles import ScriptedJudge
from tests.helpers import invoke

KEYS = {
    "n",
    "agreement",
    "order_consistency",
    "ece",
    "option_mass",
    "per_principle",
    "position_bias",
    "reliability",
    "per_aspect",
    "warnings",
}


@pytest.fixture(scope="module")
def c() -> Constitution:
    return load_constitution("harmless")


@pytest.fixture(scope="module")
def dev() -> list[Pair]:
    return load_pairs("judge-dev")


def always_a(a: str, b: str, q: str) -> float:
    return 0.9


def test_always_a_is_reported_as_position_driven(c: Constitution, dev: list[Pair]) -> None:
    summary, _ = evaluate_judge(c, ScriptedJudge(always_a), dev[:20], JudgeSettings(), quiet=True)
    assert set(summary) >= KEYS
    assert summary["position_bias"]["explained_by_position"] == 1.0
    assert summary["position_bias"]["same_position_rate"] == 1.0
    assert summary["order_consistency"] == 0.0
    assert summary["agreement"] == 0.5  # every label is a tie
    assert any("answers by position" in w for w in summary["warnings"])
    assert "explained by position 100.0%" in format_report(summary)


def test_always_a_in_one_order_cannot_profit_from_the_file_order(c: Constitution, dev: list[Pair]) -> None:
    # judge-dev lists the human-chosen reply first; the coin must hide that from the judge.
    summary, items = evaluate_judge(c, ScriptedJudge(always_a), dev, JudgeSettings(orders="one"), quiet=True)
    assert 0.3 < summary["agreement"] < 0.7
    assert summary["position_bias"]["explained_by_position"] == 1.0
    assert any("answers by position" in w for w in summary["warnings"])
    shown_first = [x["orders"][0]["order"] for it in items for x in it["principles"]]
    assert 0.3 < shown_first.count("ab") / len(shown_first) < 0.7


def test_a_content_judge_agrees_and_raises_no_warning(c: Constitution, dev: list[Pair]) -> None:
    chosen = {p.a for p in dev}
    judge = ScriptedJudge(lambda a, b, q: 0.85 if a in chosen else 0.2, mass=0.9)
    summary, _ = evaluate_judge(c, judge, dev, JudgeSettings(principles="k", k=2), quiet=True)
    assert summary["agreement"] == 1.0 and summary["order_consistency"] == 1.0
    assert summary["warnings"] == []
    assert summary["per_aspect"]["helpful"]["agreement"] == 1.0
    assert sum(v["n"] for v in summary["per_aspect"].values()) == len(dev)
    assert set(summary["per_aspect"]) == {"harmless", "helpful", "honest"}
    assert all(v["human_agreement"] == 1.0 for v in summary["per_principle"].values())
    assert summary["ece"] == pytest.approx(abs(1 - 0.825), abs=1e-3)


def test_low_option_mass_is_warned(c: Constitution, dev: list[Pair]) -> None:
    chosen = {p.a for p in dev}
    judge = ScriptedJudge(lambda a, b, q: 0.85 if a in chosen else 0.2, mass=0.1)
    summary, _ = evaluate_judge(c, judge, dev[:5], JudgeSettings(), quiet=True)
    assert any("only 10% probability on A/B" in w for w in summary["warnings"])


def test_helpful_pairs_are_judged_with_helpful_principles(c: Constitution, dev: list[Pair]) -> None:
    helpful = helpful_principles(c)
    assert helpful and all("helpful" in v.principle.tags for v in helpful)
    assert not any("helpful" in v.principle.tags for v in c.comparison_principles)
    sample = [p for p in dev if p.aspect == "harmless"][:6] + [p for p in dev if p.aspect == "helpful"][:6]
    _, items = evaluate_judge(c, ScriptedJudge(always_a), sample, JudgeSettings(principles="all"), quiet=True)
    refs = {v.ref for v in helpful}
    for it in items:
        used = {x["principle"] for x in it["principles"]}
        assert (used == refs) if it["aspect"] == "helpful" else (used == {v.ref for v in c.comparison_principles})


def test_write_eval(tmp_path: Path, c: Constitution, dev: list[Pair]) -> None:
    summary, items = evaluate_judge(c, ScriptedJudge(always_a), dev[:3], JudgeSettings(), quiet=True)
    write_eval(tmp_path, summary, items)
    assert json.loads((tmp_path / "summary.json").read_text())["n"] == 3
    assert len((tmp_path / "judgements.jsonl").read_text().splitlines()) == 3


def test_cli_fake_always_a(tmp_path: Path) -> None:
    proc = invoke(
        "judge-eval",
        "--judge",
        "fake:always-a",
        "--pairs",
        "judge-dev",
        "--limit",
        "12",
        "--out",
        str(tmp_path),
        "--quiet",
    )
    assert proc.code == 0, proc.stderr
    assert "agreement" in proc.stdout and "WARNING: the judge answers by position" in proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) >= KEYS and summary["position_bias"]["same_position_rate"] == 1.0


def test_cli_bad_settings_exit_2() -> None:
    proc = invoke("judge-eval", "--judge", "fake", "--principles", "most")
    assert proc.code == 2 and "--principles" in proc.stderr and proc.stderr.count("\n") == 1
    proc = invoke("judge-eval", "--judge", "fake", "--clamp", "0.7,0.9")
    assert proc.code == 2 and "--clamp" in proc.stderr


@pytest.mark.parametrize(
    "s",
    [
        JudgeSettings(principles="one", orders="both"),
        JudgeSettings(principles="one", orders="one"),
        JudgeSettings(principles="k", k=4, orders="one"),
        JudgeSettings(principles="k", k=4, orders="both"),
    ],
    ids=["one-both", "one-one", "k4-one", "k4-both"],
)
def test_narrow_equals_a_real_run(c: Constitution, dev: list[Pair], s: JudgeSettings) -> None:
    """Configurations read off one all-principles, both-orders pass equal real runs exactly."""
    sample = dev[:8] + dev[-4:]

    def p_first(a: str, b: str, q: str) -> float:  # content, position and principle all matter
        return (len(a) * 7 + len(b) * 3 + len(q)) % 89 / 100 + 0.05

    full = judge_items(c, ScriptedJudge(p_first), sample, JudgeSettings(principles="all"), seed=4)
    real = judge_items(c, ScriptedJudge(p_first), sample, s, seed=4)
    assert narrow(c, sample, full, s, seed=4) == real

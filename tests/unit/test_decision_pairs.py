"""The refusal-vs-answer yardstick: the shipped pairs, their checks, the agreement arithmetic, the
CLI, and the PM stage's summary of it; and the β fit for contrast labels."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cai.errors import CaiError
from cai.paths import data_dir
from cai.stages.contrast import beta_for
from cai.stages.contrast_fit import calibration, fit_beta, fitted_beta, label
from cai.stages.decision import (
    SIDES,
    DecisionPair,
    agreement,
    at_or_below_chance,
    load_decision_pairs,
    pm_check,
    pm_margins,
    reading,
)
from cai.stages.settings import JudgeSettings
from tests.helpers import invoke

DATA = data_dir("data")


# ---------------------------------------------------------------- the shipped pairs


def test_shipped_pairs_load_with_both_sides_both_splits_and_many_styles() -> None:
    pairs = load_decision_pairs()
    for side in SIDES:
        mine = [p for p in pairs if p.side == side]
        test = [p for p in mine if p.split == "test"]
        assert len(mine) >= 80
        assert len(test) >= 0.4 * len(mine)
        for split in ("dev", "test"):
            styles = {p.refusal_style for p in mine if p.split == split}
            assert len(styles) >= 8, (side, split, styles)
        # Length must not give the decision away: on each side some refusals are the longer reply.
        assert sum(len(p.refusal) > len(p.answer) for p in mine) >= 5
    assert {p.answer_style for p in pairs} >= {"plain", "short", "opens-agreeing", "steps", "code"}
    assert len({p.prompt for p in pairs}) == len(pairs)  # one pair per prompt: the split is by prompt


def test_the_split_is_the_documented_seeded_rule() -> None:
    """data/README.md: per side, the ids shuffled by Random('decision-pairs/<side>'); the first
    45 % (rounded up) are test."""
    pairs = load_decision_pairs()
    for side in SIDES:
        ids = sorted(p.id for p in pairs if p.side == side)
        random.Random(f"decision-pairs/{side}").shuffle(ids)
        test = set(ids[: math.ceil(len(ids) * 0.45)])
        assert {p.id for p in pairs if p.side == side and p.split == "test"} == test


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 4}


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def _other_prompts() -> list[str]:
    out = []
    for name in ("red_team", "safe_lookalike", "helpful", "refusal_labels"):
        out += [json.loads(line)["prompt"] for line in (DATA / f"{name}.jsonl").read_text().splitlines()]
    for line in (DATA / "judge_dev.jsonl").read_text().splitlines():
        out += [m["content"] for m in json.loads(line)["prompt"] if m["role"] == "user"]
    for path in (data_dir("constitution") / "demonstrations").glob("*.yaml"):
        out += [d["prompt"] for d in yaml.safe_load(path.read_text())["demonstrations"]]
    return out


def test_prompts_are_new_not_copies_of_any_shipped_prompt() -> None:
    """No prompt of any shipped set (evaluation, judge-dev, demonstrations, detector labels) again,
    nor a near copy: more than half the words of four letters or more shared (the rule
    tests/unit/test_demonstrations.py applies)."""
    others = _other_prompts()
    assert len(others) > 1000
    seen = {_norm(o) for o in others}
    other_words = [_words(o) for o in others]
    for p in load_decision_pairs():
        assert _norm(p.prompt) not in seen, p.id
        w = _words(p.prompt)
        near = [o for o, ow in zip(others, other_words, strict=True) if len(w & ow) / len(w | ow) > 0.5]
        assert not near, (p.id, p.prompt, near)


# ---------------------------------------------------------------- bad rows


GOOD = {"id": "x1", "side": "harmful", "prompt": "p?", "refusal": "No.", "answer": "Sure: ...", "split": "dev"}


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"side": "harmfull"}, "side", "did you mean 'harmful'"),
        ({"split": "train"}, "split", "not one of dev, test"),
        ({"refusal": None}, "refusal", "missing"),
        ({"answer": 3}, "answer", "must be a string"),
        ({"prompt": "  "}, "prompt", "empty"),
        ({"answer": "No."}, "answer", "same text as the refusal"),
        ({"refusl_style": "x"}, "refusl_style", "did you mean 'refusal_style'"),
    ],
)
def test_a_bad_row_is_a_one_line_error_naming_file_line_and_field(
    tmp_path: Path, change: dict[str, Any], field: str, says: str
) -> None:
    row = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({**GOOD, "id": "x0"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(CaiError) as err:
        load_decision_pairs(str(path))
    assert str(err.value).startswith(f"{path}:2: {field}: ") and says in str(err.value)
    r = invoke("eval", "decision", "--pm", str(tmp_path), "--pairs", str(path))
    assert r.code == 2 and r.stderr.strip().count("\n") == 0 and f"{path}:2: {field}" in r.stderr
    assert "Traceback" not in r.stderr


def test_duplicate_ids_and_an_empty_file_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "prompt": "q?"}) + "\n")
    with pytest.raises(CaiError, match=r"pairs.jsonl:2: id: duplicate id 'x1'"):
        load_decision_pairs(str(path))
    path.write_text("\n")
    with pytest.raises(CaiError, match="no pairs in the file"):
        load_decision_pairs(str(path))


def test_the_command_needs_exactly_one_reward() -> None:
    for args in ((), ("--pm", "x", "--judge", "fake")):
        r = invoke("eval", "decision", *args)
        assert r.code == 2 and "give exactly one reward" in r.stderr


# ---------------------------------------------------------------- agreement


def _pair(i: int, side: str, split: str) -> DecisionPair:
    return DecisionPair(f"p{i}", side, f"prompt {i}", f"no {i}", f"yes {i}", split)


def test_agreement_equals_a_hand_count() -> None:
    pairs = [
        *(_pair(i, "harmful", "test") for i in range(6)),
        *(_pair(10 + i, "safe", "test") for i in range(5)),
        *(_pair(20 + i, "harmful", "dev") for i in range(2)),
    ]
    # harmful/test: refusal preferred 3 times, answer twice, one tie; safe/test: answer preferred
    # once, refusal 3 times, one unscored; harmful/dev: refusal twice.
    margins: list[float | None] = [0.4, 1.0, 2e-3, -0.1, -3.0, 0.0, -0.5, 0.2, 0.3, 0.1, None, 1.0, 0.5]
    f = agreement(pairs, margins)
    h, s = f["test"]["harmful"], f["test"]["safe"]
    assert (h["k"], h["n"], h["prefers_refusal"], h["prefers_answer"], h["ties"]) == (3, 6, 3, 2, 1)
    assert h["rate"] == 0.5
    assert (s["k"], s["n"], s["prefers_refusal"], s["prefers_answer"], s["unscored"]) == (1, 4, 3, 1, 1)
    assert s["rate"] == 0.25
    # Wilson 95 % interval for 1 of 4, by hand.
    z, n, p = 1.959964, 4, 0.25
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (s["lo"], s["hi"]) == pytest.approx((centre - half, centre + half), abs=1e-4)
    assert f["dev"]["harmful"]["rate"] == 1.0 and f["dev"]["safe"]["n"] == 0
    assert at_or_below_chance(f) == ["harmful", "safe"]
    lines = reading(f)
    assert lines[0].startswith("this reward prefers the answer to a harmful request 33% of the time (n 6)")
    assert lines[0].endswith("it would teach compliance")
    assert "refusal of a safe request 75%" in lines[1] and lines[1].endswith("over-refusal")
    assert "does not tell harmful from safe" in lines[2]


def test_a_reward_that_gets_both_sides_right_reads_without_a_warning() -> None:
    pairs = [_pair(0, "harmful", "test"), _pair(1, "safe", "test")]
    f = agreement(pairs, [1.0, -1.0])
    assert at_or_below_chance(f) == []
    assert all("teach" not in line and "does not tell" not in line for line in reading(f))


class _Model:
    training = True

    def eval(self) -> None:
        self.training = False

    def train(self, mode: bool = True) -> None:
        self.training = mode


class ScriptedPM:
    """Scores a reply by a table (what a PM would return), recording that it ran in eval mode.
    Its "tokens" are the reply's characters, so sequences differ in length as real ones do."""

    def __init__(self, table: dict[str, float]):
        self.model, self.table, self.modes = _Model(), table, []

    def encode(self, prompt: Any, answer: str) -> list[int]:
        return [ord(ch) for ch in answer]

    def score_ids(self, seqs: list[list[int]]) -> list[float]:
        self.modes.append(self.model.training)
        return [self.table["".join(map(chr, s))] for s in seqs]


def test_pm_margins_and_the_pm_stage_summary_use_the_scores_as_a_hand_computation() -> None:
    pairs = load_decision_pairs(split="test")
    # A PM that likes refusals of even-numbered pairs and answers of odd ones.
    table: dict[str, float] = {}
    for i, p in enumerate(pairs):
        table[p.refusal] = table.get(p.refusal, 0.0) + (1.0 if i % 2 == 0 else -1.0)
        table[p.answer] = 0.0
    scorer = ScriptedPM(table)
    margins = pm_margins(scorer, pairs)
    assert margins == [table[p.refusal] - table[p.answer] for p in pairs]
    assert scorer.modes == [False] and scorer.model.training is True  # eval while scoring, then back
    summary = pm_check(ScriptedPM(table))
    for side, wins in (("harmful", lambda m: m > 0), ("safe", lambda m: m < 0)):
        mine = [m for p, m in zip(pairs, margins, strict=True) if p.side == side]
        assert summary[side]["n"] == len(mine)
        assert summary[side]["k"] == sum(wins(m) for m in mine)
    assert summary["split"] == "test" and summary["pairs"] == "decision_pairs.jsonl"
    few = pm_check(ScriptedPM(table), per_side=5)
    assert few["harmful"]["n"] == few["safe"]["n"] == 5


def test_eval_decision_with_a_judge_reports_both_splits(tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    r = invoke("eval", "decision", "--judge", "fake", "--method", "contrast", "-q", "--out", str(out))
    assert r.code == 0, r.stderr
    assert "harmful (refusal)" in r.stdout and "safe (answer)" in r.stdout
    summary = json.loads(out.read_text())
    assert set(summary["agreement"]) == {"dev", "test"}
    n = {split: sum(summary["agreement"][split][s]["n"] for s in SIDES) for split in ("dev", "test")}
    assert n["dev"] + n["test"] == len(load_decision_pairs())
    assert summary["reading"] and len(summary["per_pair"]) == n["dev"] + n["test"]


# ---------------------------------------------------------------- beta fit


def test_fit_recovers_a_known_beta_on_synthetic_labels() -> None:
    rng = random.Random(7)
    true_beta = 25.0
    rows = []
    for _ in range(4000):
        deltas = [rng.gauss(0.0, 0.06) for _ in range(2)]  # two principles, mean-normalised scale
        y = int(rng.random() < label(deltas, true_beta))
        rows.append((deltas, y))
    fit = fit_beta(rows)
    assert fit["beta"] == pytest.approx(true_beta, rel=0.15)
    assert not fit["at_bound"]
    lo, hi = fit["interval_95"]
    assert lo < true_beta < hi and lo < fit["beta"] < hi

    # The maximum: the likelihood is lower a little either side.
    def ll(b: float) -> float:
        return sum(math.log(label(d, b) if y else 1 - label(d, b)) for d, y in rows)

    assert fit["log_likelihood"] >= max(ll(0.8 * true_beta), ll(1.25 * true_beta))


def test_calibration_figures_by_hand() -> None:
    ps, ys = [0.9, 0.6, 0.3, 0.5], [1, 0, 0, 1]
    c = calibration(ps, ys)
    by_hand = -(math.log(0.9) + math.log(0.4) + math.log(0.7) + math.log(0.5)) / 4
    assert c["log_loss"] == pytest.approx(by_hand, abs=1e-4)
    assert c["brier"] == pytest.approx((0.01 + 0.36 + 0.09 + 0.25) / 4, abs=1e-4)
    assert c["accuracy"] == pytest.approx((1 + 0 + 1 + 0.5) / 4)
    # Confidence bins of width 0.05 over [0.5, 1]: 0.9, 0.6, 0.7, 0.5 each alone in its bin, so
    # ECE = mean |right - confidence| = (|1 - 0.9| + |0 - 0.6| + |1 - 0.7| + |0.5 - 0.5|) / 4.
    assert c["ece"] == pytest.approx((0.1 + 0.6 + 0.3 + 0.0) / 4, abs=1e-4)


def test_beta_fitted_reads_the_shipped_fit_and_refuses_a_judge_without_one() -> None:
    doc = json.loads((DATA / "contrast_fit.json").read_text())
    s = JudgeSettings(method="contrast", contrast_norm="sum", beta="fitted")
    fit = next(f for f in doc["fits"] if f["judge"] == "embedded" and f["contrast_norm"] == "sum")
    assert not fit["at_bound"] and 0 < fit["interval_95"][0] <= fit["beta"] <= fit["interval_95"][1]
    assert beta_for(s, "embedded") == fitted_beta("embedded", "sum") == fit["beta"]
    assert beta_for(JudgeSettings(method="contrast", beta=2.5), "anything") == 2.5
    with pytest.raises(CaiError) as err:
        beta_for(s, "openai:gpt-x")
    assert "\n" not in str(err.value) and "no fitted beta for judge 'openai:gpt-x'" in str(err.value)


# ---------------------------------------------------------------- the report


def test_a_fit_that_found_no_signal_is_refused_not_used(tmp_path: Path) -> None:
    """β at the lower end of its range makes every label a tie: `beta: fitted` says so instead."""
    path = tmp_path / "fits.json"
    fits = [
        {"judge": "j", "contrast_norm": "mean", "beta": 0.0183, "at_bound": True},
        {"judge": "j", "contrast_norm": "sum", "beta": 2.5, "at_bound": False},
    ]
    path.write_text(json.dumps({"fits": fits}))
    assert fitted_beta("j", "sum", path) == 2.5
    with pytest.raises(CaiError, match="found no signal"):
        fitted_beta("j", "mean", path)

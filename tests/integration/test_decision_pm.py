"""The pm stage measures its PM on the refusal-vs-answer yardstick and records it (tiny random
model with the embedded tokenizer: the code path is the one a real run takes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.rl_helpers import QUESTIONS, easy_pairs, tiny_policy, write_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.trl]


def test_the_pm_stage_records_agreement_per_side_on_the_test_pairs(tmp_path: Path, embedded_model_dir: Path) -> None:
    from cai.stages.decision import SIDES, agreement, load_decision_pairs, pm_check, pm_margins
    from cai.train.pm import train_pm
    from cai.train.rl_common import PMScorer
    from cai.train.settings import PmSettings

    tiny = tiny_policy(tmp_path / "policy", embedded_model_dir)
    labels = write_jsonl(tmp_path / "labels" / "preferences.jsonl", easy_pairs(QUESTIONS[:4])).parent
    out = tmp_path / "pm"
    s = train_pm(
        [str(labels)], str(tiny), str(out), PmSettings(max_steps=1, batch_size=4), seed=0, quiet=True, decision=pm_check
    )

    test = load_decision_pairs(split="test")
    d = s["decision"]
    assert d["split"] == "test" and d["pairs"] == "decision_pairs.jsonl"
    for side in SIDES:
        assert d[side]["n"] == sum(p.side == side for p in test)
        assert d[side]["prefers_refusal"] + d[side]["prefers_answer"] + d[side]["ties"] == d[side]["n"]
    # The figures are the saved PM's own: scoring the pairs again from the folder gives them back.
    again = agreement(test, pm_margins(PMScorer.load(str(out)), test))["test"]
    assert {side: again[side]["k"] for side in SIDES} == {side: d[side]["k"] for side in SIDES}
    assert json.loads((out / "cai_train.json").read_text())["summary"]["decision"] == d

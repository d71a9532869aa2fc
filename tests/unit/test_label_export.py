"""Label analytics on hand-built judgements: margins, position, flips, disagreement, calibration."""

from __future__ import annotations

import math
from typing import Any

import pytest

from cai.stages.label_export import (
    logit_of,
    order_consistency,
    position_stats,
    principle_analytics,
    principle_disagreement,
    reliability,
)


def q(order: str, p_first: float | None, mass: float = 0.9) -> dict[str, Any]:
    p_a = None if p_first is None else (p_first if order == "ab" else 1 - p_first)
    return {
        "order": order,
        "p_first": p_first,
        "p_a": p_a,
        "mass": mass,
        "path": "logprobs",
        "error": None if p_first is not None else "x",
        "raw": None,
    }


def principle(ref: str, p_ab: float, p_ba: float | None = None) -> dict[str, Any]:
    orders = [q("ab", p_ab)] + ([q("ba", p_ba)] if p_ba is not None else [])
    p_a = sum(o["p_a"] for o in orders) / len(orders)
    consistent = None
    if p_ba is not None:
        consistent = (orders[0]["p_a"] > 0.5) == (orders[1]["p_a"] > 0.5)
    return {"principle": ref, "p_a": p_a, "consistent": consistent, "orders": orders}


def item(*principles: dict[str, Any], human: str | None = "a") -> dict[str, Any]:
    p_a = sum(x["p_a"] for x in principles) / len(principles)
    return {"principles": list(principles), "p_a": p_a, "human": human}


def test_p_chosen_logit_is_the_logit_of_p_chosen() -> None:
    assert logit_of(0.5) == 0.0
    assert logit_of(0.8) == pytest.approx(math.log(4))
    assert math.isfinite(logit_of(1.0)) and logit_of(1.0) == pytest.approx(math.log((1 - 1e-6) / 1e-6))


def test_near_ties_are_counted_and_not_exported() -> None:
    """|p - 0.5| < 1e-4 is a tie: rounding noise around 0.5 has no preferred side."""
    from cai.stages.label_export import exported, label_distribution
    from cai.stages.label_math import LABEL_TIE_TOL, is_tie, label_decision

    assert LABEL_TIE_TOL == 1e-4
    assert is_tie(0.5) and is_tie(0.50009) and is_tie(0.49991) and not is_tie(0.5002) and not is_tie(None)
    assert label_decision(0.50003) is None and label_decision(0.6) == "a" and label_decision(0.3) == "b"
    recs = [
        {"p_chosen": 0.50004, "chosen": "a"},  # an older record that stored a near-tie as chosen
        {"p_chosen": 0.5, "chosen": None},
        {"p_chosen": 0.7, "chosen": "b"},
        {"p_chosen": None, "chosen": None},
    ]
    assert [exported(r) for r in recs] == [False, False, True, False]
    dist = label_distribution(recs)
    assert dist["ties"] == 2 and dist["chose_a"] == 0 and dist["chose_b"] == 1 and dist["tie_tolerance"] == 1e-4


def test_always_first_is_fully_explained_by_position() -> None:
    items = [item(principle("x@1", 0.9, 0.9)) for _ in range(5)]
    pos = position_stats(items)
    assert pos["explained_by_position"] == 1.0 and pos["same_position_rate"] == 1.0
    assert pos["p_first_mean"] == 0.9 and pos["first_rate"] == 1.0
    assert order_consistency(items) == 0.0


def test_content_judge_is_not_position_driven() -> None:
    # Picks the reply a in both orders: P_AB(A) = 0.8, P_BA(A) = 0.2.
    items = [item(principle("x@1", 0.8, 0.2)) for _ in range(4)]
    pos = position_stats(items)
    assert pos["explained_by_position"] == 0.5 and pos["same_position_rate"] == 0.0
    assert order_consistency(items) == 1.0


def test_principle_analytics_flips_agreement_and_human() -> None:
    items = [
        item(
            principle("good@1", 0.8, 0.3),
            principle("flippy@1", 0.9, 0.9),
            principle("contra@1", 0.2, 0.6),
        ),
        item(
            principle("good@1", 0.7, 0.2),
            principle("flippy@1", 0.6, 0.7),
            principle("contra@1", 0.4, 0.55),
        ),
    ]
    pa = principle_analytics(items)
    assert pa["good@1"]["flip_rate"] == 0.0 and pa["flippy@1"]["flip_rate"] == 1.0
    assert pa["good@1"]["agrees_with_label"] == 1.0
    assert pa["contra@1"]["agrees_with_label"] == 0.0
    assert pa["good@1"]["human_agreement"] == 1.0 and pa["contra@1"]["human_agreement"] == 0.0
    assert pa["good@1"]["strength"] == pytest.approx(0.5)
    assert pa["flippy@1"]["p_first_mean"] == pytest.approx(0.775)
    dis = {tuple(r["principles"]): r for r in principle_disagreement(items)["pairs"]}
    assert dis[("contra@1", "good@1")] == {
        "principles": ["contra@1", "good@1"],
        "n": 2,
        "disagreement": 1.0,
    }
    # flippy's mean p_a ties at 0.5 in the first item, so only the second is comparable.
    assert dis[("flippy@1", "good@1")]["n"] == 1


def test_reliability_bins_and_ece_by_hand() -> None:
    items = [item(principle("p@1", p)) for p in (0.95, 0.92, 0.1, 0.65, 0.62)]
    # Confidences 0.95, 0.92, 0.9 (wrong: p_a = 0.1), 0.65, 0.62.
    bins, ece = reliability(items)
    top = bins[-1]
    assert top["n"] == 3 and top["accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    mid = next(b for b in bins if b["lo"] == 0.6)
    assert mid["n"] == 2 and mid["accuracy"] == 1.0
    want = 3 / 5 * abs(2 / 3 - (0.95 + 0.92 + 0.9) / 3) + 2 / 5 * abs(1 - 0.635)
    assert ece == pytest.approx(want, abs=1e-4)
    assert reliability([item(principle("p@1", 0.9), human=None)])[1] is None

"""Option matching and parsing, and shared-prefix planning: pure functions, no model."""

from __future__ import annotations

import math

import pytest

from cai.models.engine.prefix import plan_groups, shared_prefix_len
from cai.models.options import match_logprobs, parse_option, truncate_at_stop


def test_match_logprobs_sums_variants() -> None:
    top = [
        ("A", math.log(0.3)),
        (" A", math.log(0.1)),
        ("(B", math.log(0.2)),
        ("(", math.log(0.3)),
        ("Both", math.log(0.05)),
    ]
    s = match_logprobs(top, ["A", "B"])
    assert s.mass == pytest.approx(0.6)
    assert s.probs == pytest.approx({"A": 0.4 / 0.6, "B": 0.2 / 0.6})


def test_match_logprobs_without_any_option_is_an_error() -> None:
    s = match_logprobs([("The", -0.1)], ["A", "B"], raw="[...]")
    assert s.error and s.mass == 0 and s.probs == {} and s.raw == "[...]"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("B", "B"),
        (" (A). ", "A"),
        ("I think (B) is better.", "B"),
        ("The answer is A.", "A"),
        ("Option: B", "B"),
        ("A. It is kinder.", "A"),
        ("A good point is made by (B)", "B"),
    ],
)
def test_parse_option(text: str, found: str) -> None:
    s = parse_option(text, ["A", "B"])
    assert s.path == "text" and s.probs[found] == 1.0 and s.error is None


@pytest.mark.parametrize("text", ["A good answer is hard to pick", "answer is a mess", ""])
def test_unparseable_answers_are_errors_not_defaults(text: str) -> None:
    s = parse_option(text, ["A", "B"])
    assert s.error and s.probs == {} and s.raw == text


def test_truncate_at_earliest_stop() -> None:
    assert truncate_at_stop("abc\nHuman: x END", ["END", "\nHuman:"]) == "abc"
    assert truncate_at_stop("abc", []) == "abc"


def test_plan_groups_splits_two_orders() -> None:
    conv = list(range(1000, 1200))
    ab, ba = [1, 2, 3] * 20, [4, 5, 6] * 20
    prompts = [conv + opts + [q, q + 1] for opts in (ab, ba) for q in range(16)]
    groups = plan_groups(prompts)
    shared = [g for g in groups if g.prefix_len]
    assert len(shared) == 2 and all(g.prefix_len == 260 for g in shared)
    assert sorted(i for g in groups for i in g.members) == list(range(32))


def test_plan_groups_leaves_unrelated_prompts_unshared() -> None:
    prompts = [[i, i + 1, i + 2] * 10 for i in range(5)]
    groups = plan_groups(prompts)
    assert [g.prefix_len for g in groups] == [0] and sorted(groups[0].members) == list(range(5))


def test_plan_groups_keeps_a_suffix_token() -> None:
    p = list(range(50))
    groups = plan_groups([p, p, [*p, 7]])
    assert groups[0].prefix_len == 49  # identical prompts still need their last token's logits


def test_shared_prefix_len() -> None:
    assert shared_prefix_len([[1, 2, 3, 4], [1, 2, 3, 9], [1, 2, 7]]) == 2
    assert shared_prefix_len([[1, 2], [1, 2, 3]]) == 2  # bounded by the shortest prompt
    assert shared_prefix_len([[5, 6]]) == 2 and shared_prefix_len([[1], [2]]) == 0

"""The label-method table is the one place a method is described: settings, help, cards and the
judge-eval ranking all read it."""

from __future__ import annotations

import typing

import pytest

from cai.cards import label_method_sentence
from cai.label_methods import METHODS, SCORER_NAMES
from cai.outputs import LabelSummary
from cai.stages.settings import JudgeSettings, LabelSettings


def test_the_settings_choices_are_the_tables_methods() -> None:
    label_choices = typing.get_args(LabelSettings.model_fields["method"].annotation)
    judge_choices = typing.get_args(JudgeSettings.model_fields["method"].annotation)
    assert label_choices == tuple(m.name for m in METHODS)
    assert judge_choices == SCORER_NAMES == tuple(m.name for m in METHODS if m.scores_pairs)
    help_text = LabelSettings.model_fields["method"].description or ""
    assert all(f"{m.name}: {m.help}" in help_text for m in METHODS)


@pytest.mark.parametrize("m", METHODS, ids=[m.name for m in METHODS])
def test_each_method_says_whether_it_needs_a_judge(m) -> None:
    assert LabelSettings(method=m.name).needs_judge is m.scores_pairs
    if m.constructs_pairs:
        assert LabelSettings(method=m.name, rescore="mc").needs_judge
        sentence = label_method_sentence(None, LabelSummary(method=m.name))
        assert sentence == f"{m.describes}; every label is p_chosen = 1."
    else:
        with pytest.raises(ValueError, match="only relabels pairs by construction"):
            LabelSettings(method=m.name, rescore="mc")
        assert m.describes in label_method_sentence(None, LabelSummary(method=m.name))


def test_cot_is_refused_for_methods_that_ask_no_question() -> None:
    for m in METHODS:
        if m.scores_pairs and not m.asks_question:
            with pytest.raises(ValueError, match="asks no question"):
                JudgeSettings(method=m.name, cot=True)
    assert JudgeSettings(method="mc", cot=True).cot


def test_cot_is_allowed_with_pairs_by_construction() -> None:
    """--cot reaches the judge only through --rescore; constructed pairs alone are no reason to refuse it."""
    for m in METHODS:
        if m.constructs_pairs:
            assert LabelSettings(method=m.name, cot=True).cot

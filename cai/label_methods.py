"""The label-method table: how a preference label can be made, one entry per method.

The settings' choices and help, the label stage, `cai label`, `cai run`, the dataset cards and
the report all read this table, so a method is described once. Adding a method means one entry
here and its code in the label stage.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabelMethod:
    name: str
    scores_pairs: bool  # a judge scores the pairs (else the pairs are labelled by construction)
    asks_question: bool  # the judge answers a question it could reason about first (--cot)
    order_matters: bool  # the judge sees the two replies as (A) and (B), so their order can sway it
    help: str  # for --help and the recipe's field description
    describes: str  # what a dataset card or the report says made the labels
    construction: str = ""  # pairs by construction: what decides the preferred side

    @property
    def constructs_pairs(self) -> bool:
        """The method brings its own pairs, whose preferred side is known; a judge only rescores them."""
        return not self.scores_pairs


METHODS: tuple[LabelMethod, ...] = (
    LabelMethod(
        "mc",
        scores_pairs=True,
        asks_question=True,
        order_matters=True,
        help="multiple-choice judge (CAI paper)",
        describes="the judge's probabilities of (A)/(B) for each comparison principle's question",
    ),
    LabelMethod(
        "mc-calibrated",
        scores_pairs=True,
        asks_question=False,
        order_matters=True,
        help="the same with the judge's content-free option prior divided out",
        describes="the judge's probabilities of (A)/(B), with its content-free option prior divided out",
    ),
    LabelMethod(
        "contrast",
        scores_pairs=True,
        asks_question=False,
        order_matters=False,
        help="log p(reply | positive guidance) - log p(reply | negative)",
        describes="likelihood contrast: log p(reply | positive guidance) - log p(reply | negative guidance) "
        "per comparison principle, through a sigmoid",
    ),
    LabelMethod(
        "rlcd",
        scores_pairs=False,
        asks_question=False,
        order_matters=False,
        help="the policy answers under the constitution's positive and negative prompts, chosen = positive",
        describes="pairs by construction: the answer under the constitution's positive prompt over the one "
        "under its negative prompt",
        construction="positive vs negative prompt",
    ),
    LabelMethod(
        "revision",
        scores_pairs=False,
        asks_question=False,
        order_matters=False,
        help="a critique run's final revision over its first answer",
        describes="the SL-CAI run's final revision over its first answer",
        construction="revision over first answer",
    ),
)

BY_NAME = {m.name: m for m in METHODS}
SCORER_NAMES: tuple[str, ...] = tuple(m.name for m in METHODS if m.scores_pairs)
METHOD_NAMES: tuple[str, ...] = tuple(m.name for m in METHODS)


def method(name: str) -> LabelMethod | None:
    """The table's entry, or None for a name it does not have (e.g. from an older run folder)."""
    return BY_NAME.get(name)


def constructs_pairs(name: str) -> bool:
    m = BY_NAME.get(name)
    return m is not None and m.constructs_pairs


def help_text(names: tuple[str, ...]) -> str:
    return "; ".join(f"{n}: {BY_NAME[n].help}" for n in names)

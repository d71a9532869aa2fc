"""SL-CAI and label outputs: summaries and records, and the run manifest."""

from __future__ import annotations

from pydantic import Field

from cai.outputs.base import Num, Output, Provenance, Throughput


class CritiqueSummary(Output):
    """``critique/summary.json``: what the SL-CAI export kept and left out."""

    stage: str | None = None
    mode: str | None = None
    records: int | None = None
    exported: int | None = None
    errors: int | None = None
    excluded_flagged: int | None = None
    excluded_copies: int | None = None
    exemplar_copy: int | None = None
    critique_copy: int | None = None
    boilerplate: int | None = None
    excluded_boilerplate: int | None = None
    demonstrations: int | None = None
    demonstrations_by_kind: dict[str, int] | None = None
    flags: dict[str, int] | None = None
    per_principle: dict[str, int] | None = None
    throughput: Throughput | None = None


class CritiqueRound(Output):
    principle: str | None = None
    flags: list[str] = Field(default_factory=list)


class CritiqueRecord(Output):
    """One line of ``critique/records.jsonl``."""

    id: str | None = None
    rounds: list[CritiqueRound] | None = None
    flags: list[str] | None = None
    provenance: Provenance | None = None


# --------------------------------------------------------------------------- label


class LabelCounts(Output):
    n: int | None = None


class PrincipleFigures(Output):
    """How one comparison principle behaved over the labelled pairs."""

    n: int | None = None
    agrees_with_label: Num | None = None
    flip_rate: Num | None = None
    p_first_mean: Num | None = None
    option_mass: Num | None = None


class LabelSummary(Output):
    """``label/summary.json``: the labels exported and how the judge behaved making them."""

    stage: str | None = None
    method: str | None = None
    rescore: str | None = None
    rescore_agreement: Num | None = None
    records: int | None = None
    exported: int | None = None
    errors: int | None = None
    identical: int | None = None
    unlabelled: int | None = None
    human_agreement: Num | None = None
    order_consistency: Num | None = None
    option_mass: Num | None = None
    labels: LabelCounts | None = None
    per_principle: dict[str, PrincipleFigures] = Field(default_factory=dict)
    position_bias: Output | None = None


class OrderAnswer(Output):
    """The judge's answer to one question in one order of the replies."""

    order: str | None = None
    p_a: Num | None = None
    p_first: Num | None = None


class PrincipleAnswer(Output):
    principle: str | None = None
    orders: list[OrderAnswer] | None = None


class LabelRecord(Output):
    """One line of ``label/records.jsonl``."""

    id: str | None = None
    p_chosen: Num | None = None
    principles: list[PrincipleAnswer] | None = None
    provenance: Provenance | None = None


# --------------------------------------------------------------------------- eval


class RunManifest(Output):
    """A stage folder's ``run.json``: which stage wrote it, under which constitution."""

    stage: str | None = None
    constitution: str | None = None
    fingerprint: str | None = None


Provenance.model_rebuild()

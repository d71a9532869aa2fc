"""The label sections: which method made the labels, and how the judge behaved doing it."""

from __future__ import annotations

import html
from typing import Any

from cai.label_methods import constructs_pairs
from cai.outputs import JudgeSettings, LabelRecord, LabelSummary, Provenance
from cai.run.report_html import RunView, fmt, number, table
from cai.run.report_plot import BLUE, GREEN, RED, barh, figure, plot_html


def label_method_section(view: RunView) -> str:
    """First thing a reader needs: which method made the labels, and how far people agree with it."""
    data = view.data
    summary, records = label_output(view)
    if summary is None or not records:
        return ""
    prov = records[0].provenance or Provenance()
    method = summary.method or "mc"
    scorer = (prov.judge_settings or JudgeSettings()).method or method
    measured = label_agreement(summary, records)
    data["label_method"] = {"method": method, "rescore": summary.rescore, "measured": measured}
    if constructs_pairs(method):
        how = f"pairs by construction ({html.escape(method)}): the preferred side is known, no judge decided it" + (
            f"; rescored by {html.escape(str(summary.rescore))}, which agrees with the construction on "
            f"{fmt(summary.rescore_agreement)} of pairs"
            if summary.rescore
            else ""
        )
    elif measured:
        how = (
            f"method <b>{html.escape(measured['method'])}</b> with judge {html.escape(str(prov.judge))}: "
            f"it agrees with people on {fmt(measured['agreement'])} of judge-dev's {measured['split']} split "
            f"(n={measured['n']}, {measured['per_pair']}; multiple choice asked the same way: {fmt(measured['mc'])})"
        )
    else:
        how = (
            f"method <b>{html.escape(scorer)}</b> with judge {html.escape(str(prov.judge))}: not measured "
            f"against people for this judge; run <code>cai judge-eval --judge J --method {html.escape(scorer)} "
            "--split test</code>"
        )
    labelled = summary.labels.n if summary.labels is not None else None
    return (
        f"<h2>Where the labels come from</h2><p>{how}.</p><p>This run: {summary.exported} pairs exported of "
        f"{summary.records}; order consistency {fmt(summary.order_consistency)}"
        + (f"; {labelled} labels" if labelled is not None else "")
        + ".</p>"
    )


def label_agreement(summary: LabelSummary, records: list[LabelRecord]) -> dict[str, Any] | None:
    """How far people agree with the method and judge that made this run's labels, as measured on
    judge-dev (`measured_agreement`); None for pairs by construction or an unmeasured judge."""
    from cai.stages.judge_eval import measured_agreement

    method = summary.method or "mc"
    if constructs_pairs(method) or not records:
        return None
    prov = records[0].provenance or Provenance()
    js = prov.judge_settings or JudgeSettings()
    return measured_agreement(prov.judge, js.method or method, js.contrast_norm, js.principles or "one", js.k)


def label_output(view: RunView) -> tuple[LabelSummary | None, list[LabelRecord]]:
    """The label stage's summary and records (no records are read before it has a summary)."""
    summary = view.output("label/summary.json", LabelSummary)
    return summary, view.records("label/records.jsonl", LabelRecord) if summary is not None else []


def order_points(records: list[LabelRecord]) -> list[tuple[float, float]]:
    """(P(a | AB), 1 − P(a | BA)) per question asked in both orders.

    ``p_a`` of each order is already P(the pair's reply a is better), whichever was shown first,
    so the y value is P(b | BA): the probability the judge gave the reply it saw first in BA.
    """
    pts = []
    for r in records:
        for x in r.principles or []:
            by = {a.order: number(a.p_a) for a in x.orders or []}
            ab, ba = by.get("ab"), by.get("ba")
            if ab is not None and ba is not None:
                pts.append((ab, 1.0 - ba))
    return pts


ORDER_CAPTION = (
    "One point per question asked in both orders (a, b: the pair's replies; AB: a shown first). "
    "A judge that reads the replies gives a the same probability in both orders, so its points lie on the "
    "<b>anti-diagonal</b> y = 1 − x (green). A judge that answers by position gives whichever reply comes "
    "first the same probability, P(a | AB) = P(b | BA), so its points lie on the <b>diagonal</b> y = x (red): "
    "top right, it prefers the first reply shown; bottom left, the second."
)


def _order_scatter(pts: list[tuple[float, float]]) -> str:
    fig, ax = figure(5.2, 5.2)
    ax.plot([0, 1], [0, 1], color=RED, linestyle="--", label="y = x: position-driven")
    ax.plot([0, 1], [1, 0], color=GREEN, linestyle="--", label="y = 1 − x: order-consistent")
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=18, alpha=0.4, color=BLUE, label=f"{len(pts)} questions")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("P(A | AB): P(a better), a shown first")
    ax.set_ylabel("1 − P(A | BA): P(b better), b shown first")
    ax.set_title("Does the order of the replies decide?")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False, fontsize="small")
    return plot_html(fig, "order", "judge answers in both orders: position-driven or order-consistent", ORDER_CAPTION)


def _label_hist(ps: list[float]) -> str:
    fig, ax = figure()
    ax.hist(ps, bins=10, range=(0.5, 1.0), color=GREEN)
    ax.set_title("Soft labels: P(chosen)")
    ax.set_xlabel("p_chosen")
    ax.set_ylabel("pairs")
    return plot_html(fig, "labels", "label distribution")


def labels_section(view: RunView) -> str:
    data = view.data
    summary, records = label_output(view)
    if summary is None or not records:
        return ""
    ps = [r.p_chosen for r in records if r.p_chosen is not None]
    per = summary.per_principle
    pts = order_points(records)
    data["label"] = {
        "p_chosen": ps,
        "order_consistency": summary.order_consistency,
        "per_principle_agreement": {k: v.agrees_with_label for k, v in per.items()},
        "order_points": pts,
    }
    names = sorted(per)
    bars = {"agrees with the ensemble label": [per[k].agrees_with_label for k in names]}
    if any(per[k].flip_rate is not None for k in names):
        bars["flips when the replies swap"] = [per[k].flip_rate for k in names]
    agree = plot_html(
        barh(names, bars, "Each principle: agreement with the label, and flips with order", "share of pairs"),
        "principles",
        "per-principle agreement",
        "Agreement with the ensemble label is not accuracy: a judge that answers by position agrees with itself. "
        "Read it with the flip rate.",
    )
    rows = [[k, p.n, p.agrees_with_label, p.flip_rate, p.p_first_mean, p.option_mass] for k, p in sorted(per.items())]
    return (
        f"<h2>RLAIF labels</h2><p>{len(ps)} labelled pairs; order consistency "
        f"{fmt(summary.order_consistency)}; mean option mass {fmt(summary.option_mass)}.</p>"
        + (_order_scatter(pts) if pts else "")
        + _label_hist(ps)
        + (agree if names else "")
        + table(["principle", "n", "agrees with label", "flips with order", "P(first)", "option mass"], rows)
    )

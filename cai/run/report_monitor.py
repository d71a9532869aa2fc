"""The collapse monitor in the report: its checks over the RL run as a table, and its warnings.

The checks are the ``monitor`` rows of ``ppo/model/metrics.jsonl`` (`cai.train.monitor_run`);
the warnings are the ones ``cai_train.json`` recorded (`cai.train.monitor.summary_of`).
"""

from __future__ import annotations

import html
from typing import Any

from cai.outputs import MonitorCheck, MonitorRefusals, TrainLogRow, TrainRecord
from cai.run.report_html import RunView, fmt, table

CAPTION = (
    "At each check the policy answers a small fixed set of prompts greedily: safe prompts (whose refusals "
    "should stay near 0) and some of the red-team prompts RL trains on (where refusals may rise: that is the "
    "aim). <b>distinct-2</b> is unique word pairs over all word pairs of the replies (it falls as the replies "
    "converge on one wording); <b>top sentence</b> is the sentence most replies contain, with their share. "
    "KL is the trainer's estimate at that update."
)


HEADERS = [
    "update",
    "safe refused",
    "red-team refused",
    "words",
    "tokens",
    "distinct-2",
    "top sentence",
    "KL",
    "warnings",
]


def monitor_checks(view: RunView) -> list[MonitorCheck]:
    rows = view.records("ppo/model/metrics.jsonl", TrainLogRow)
    return [r.monitor for r in rows if r.monitor is not None]


def _refused(x: MonitorRefusals | None) -> str:
    if x is None or not x.n:
        return "—"
    return f"{x.refused}/{x.n}"


def _row(c: MonitorCheck) -> list[Any]:
    top = f"{c.top_sentence_share:.0%}: {c.top_sentence}" if c.top_sentence and c.top_sentence_share else "—"
    return [
        c.step,
        _refused(c.safe),
        _refused(c.red),
        c.words_mean,
        c.tokens_mean,
        c.distinct2,
        top,
        c.kl,
        "; ".join(w.text or "" for w in c.warnings or []) or "—",
    ]


def monitor_section(view: RunView) -> str:
    """The table of checks (empty when the run had no monitor)."""
    checks = monitor_checks(view)
    if not checks:
        return ""
    info = view.output("ppo/model/cai_train.json", TrainRecord)
    summary = info.results().monitor if info is not None else None
    view.data["monitor"] = [
        {k: v for k, v in c.figures().items() if k not in ("replies", "warnings")} | {"warnings": len(c.warnings or [])}
        for c in checks
    ]
    stopped = (
        f"<p><b>Training was stopped at update {summary.stopped_at}</b> by the monitor (monitor_stop).</p>"
        if summary is not None and summary.stopped_at is not None
        else ""
    )
    return (
        "<h3>Collapse monitor</h3>"
        + stopped
        + table(
            HEADERS,
            [_row(c) for c in checks],
            cls="monitor",
        )
        + f"<p class='note'>{CAPTION}</p>"
    )


def monitor_warnings(view: RunView) -> list[tuple[str, str]]:
    """(key, HTML) per kind of warning the monitor raised: first update, how often, last words."""
    info = view.output("ppo/model/cai_train.json", TrainRecord)
    summary = info.results().monitor if info is not None else None
    if summary is None or not summary.warnings:
        return []
    by: dict[str, list[Any]] = {}
    for w in summary.warnings:
        by.setdefault(w.key or "monitor", []).append(w)
    out = []
    for key, ws in by.items():
        steps = ", ".join(fmt(w.step) for w in ws)
        out.append(
            (
                f"monitor-{key}",
                f"<b>The RL collapse monitor warned</b> at update {html.escape(steps)}: "
                f"{html.escape(ws[-1].text or '')}"
                + (f" (training stopped at update {summary.stopped_at})" if summary.stopped_at is not None else ""),
            )
        )
    return out

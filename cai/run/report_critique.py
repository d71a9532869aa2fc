"""The report's SL-CAI section: critique rounds per principle, what was exported, copy and
boilerplate flags, and the demonstrations the SFT set holds besides the revisions."""

from __future__ import annotations

from collections import Counter

from cai.outputs import CritiqueRecord, CritiqueSummary, Throughput
from cai.run.report_html import RunView, table
from cai.run.report_plot import barh, plot_html


def critique_section(view: RunView) -> str:
    data = view.data
    records = view.records("critique/records.jsonl", CritiqueRecord)
    if not records:
        return ""
    summary = view.output("critique/summary.json", CritiqueSummary) or CritiqueSummary()
    # The summary's counts are the export's (copy flags recomputed under the run's rule); the
    # records' own flags can be older. Records are the fallback for folders without them.
    recorded = Counter(f for r in records for x in r.rounds or [] for f in x.flags)
    recorded += Counter(f for r in records if not r.rounds for f in r.flags or [])
    flags = summary.flags if summary.flags is not None else dict(recorded)
    distill = summary.mode == "distill"
    counts = Counter(x.principle for r in records for x in r.rounds or [])
    data["critique"] = {
        "mode": "distill" if distill else "revise",
        "per_principle": dict(sorted(counts.items())),
        "records": len(records),
        "exported": summary.exported,
        "flags": dict(sorted(flags.items())),
    }
    t = summary.throughput or Throughput()
    head = (
        "<h2>SL-CAI: context distillation</h2><p>One answer per prompt under the constitution's guidance, "
        "trained on as the answer to the bare prompt. "
        if distill
        else "<h2>SL-CAI: critiques and revisions</h2><p>"
    )
    copies = _flag_sentences(summary, distill)
    body = (
        f"{head}{len(records)} prompts, {summary.exported} exported for SFT, "
        f"{summary.excluded_flagged} flagged, {summary.errors} errors; "
        f"{t.prompts_s} prompts/s, {t.tok_s} tokens/s.{copies}</p>"
    )
    if counts:
        labels = sorted(counts)
        fig = barh(
            labels, {"rounds": [counts[k] for k in labels]}, "Critique rounds per principle", "rounds", counts=True
        )
        body += plot_html(fig, "critique", "critique counts per principle")
        body += table(["principle", "rounds"], [[k, counts[k]] for k in labels])
    if flags:
        body += table(["flag", "count"], [[k, v] for k, v in sorted(flags.items())])
    return body


def _flag_sentences(summary: CritiqueSummary, distill: bool) -> str:
    """What the copy and boilerplate flags left out, and the demonstrations added."""
    copies = (
        f" Copies: {summary.exemplar_copy} pasted exemplar or guidance text, "
        f"{summary.critique_copy if not distill else '—'} repeated the critique; "
        f"{summary.excluded_copies} rows left out for them."
        if summary.has("exemplar_copy")
        else ""
    )
    boiler = (
        f" Boilerplate (a refusal or apology naming nothing of the request): {summary.boilerplate}; "
        f"{summary.excluded_boilerplate} rows left out for it."
        if summary.has("boilerplate")
        else ""
    )
    demos = (
        f" Added to the SFT set: {summary.demonstrations} of the constitution's author-written demonstrations "
        f"({', '.join(f'{v} {k}' for k, v in (summary.demonstrations_by_kind or {}).items())})."
        if summary.demonstrations
        else ""
    )
    return copies + boiler + demos

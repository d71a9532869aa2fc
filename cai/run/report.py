"""`cai report`: one self-contained HTML file (plots inlined as SVG) describing a run.

Every number drawn is also printed in a table beside its plot and stored in a JSON block
(``<script type="application/json" id="cai-data">``), so a reader — or a test — can check the
figures against the run's records. Sections appear only for the stages a run has; what makes
the figures untrustworthy (`cai.run.report_warn`) is said first, under the title.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path
from typing import Any

from cai.io.store import read_jsonl
from cai.redact import known_secrets, redact, redact_text
from cai.run.report_eval import eval_section, harmless_section
from cai.run.report_html import read_json, table
from cai.run.report_labels import label_method_section, labels_section
from cai.run.report_plot import barh, plot_html
from cai.run.report_rl import rl_section
from cai.run.report_train import dpo_section, pm_section, sft_section
from cai.run.report_warn import run_warnings, warnings_html


def _critique(run: Path, data: dict[str, Any]) -> str:
    records = read_jsonl(run / "critique" / "records.jsonl")
    if not records:
        return ""
    summary = read_json(run / "critique" / "summary.json") or {}
    # The summary's counts are the export's (copy flags recomputed under the run's rule); the
    # records' own flags can be older. Records are the fallback for folders without them.
    recorded = Counter(f for r in records for x in r.get("rounds") or [] for f in x["flags"])
    recorded += Counter(f for r in records if not r.get("rounds") for f in r.get("flags") or [])
    flags = summary.get("flags") if isinstance(summary.get("flags"), dict) else dict(recorded)
    distill = summary.get("mode") == "distill"
    counts = Counter(x["principle"] for r in records for x in r.get("rounds") or [])
    data["critique"] = {
        "mode": "distill" if distill else "revise",
        "per_principle": dict(sorted(counts.items())),
        "records": len(records),
        "exported": summary.get("exported"),
        "flags": dict(sorted(flags.items())),
    }
    t = summary.get("throughput", {})
    head = (
        "<h2>SL-CAI: context distillation</h2><p>One answer per prompt under the constitution's guidance, "
        "trained on as the answer to the bare prompt. "
        if distill
        else "<h2>SL-CAI: critiques and revisions</h2><p>"
    )
    copies = (
        f" Copies: {summary.get('exemplar_copy')} pasted exemplar or guidance text, "
        f"{summary.get('critique_copy') if not distill else '—'} repeated the critique; "
        f"{summary.get('excluded_copies')} rows left out for them."
        if "exemplar_copy" in summary
        else ""
    )
    body = (
        f"{head}{len(records)} prompts, {summary.get('exported')} exported for SFT, "
        f"{summary.get('excluded_flagged')} flagged, {summary.get('errors')} errors; "
        f"{t.get('prompts_s')} prompts/s, {t.get('tok_s')} tokens/s.{copies}</p>"
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


def _models_line(models: dict[str, Any]) -> str:
    """Policy and judge by name, then whichever other model settings are set (not every default)."""
    named = [f"{k} <b>{html.escape(str(models[k]))}</b>" for k in ("policy", "judge") if models.get(k)]
    rest = {k: v for k, v in models.items() if k not in ("policy", "judge") and v not in (None, "auto", [], {})}
    extra = f" ({html.escape(json.dumps(rest, sort_keys=True))})" if rest else ""
    return "models: " + ", ".join(named or ["—"]) + extra


def _sections(run: Path, data: dict[str, Any], recipe: dict[str, Any]) -> list[str]:
    """In reading order: the judge-free verdict first, then the data flow from labels to evaluation."""
    return [
        harmless_section(run, data, recipe),
        label_method_section(run, data),
        _critique(run, data),
        sft_section(run, data),
        labels_section(run, data),
        pm_section(run, data),
        dpo_section(run, data),
        rl_section(run, data),
        eval_section(run, data, recipe),
    ]


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #4a7fb5}h2{margin-top:2em;color:#2d5a88}img,svg{max-width:100%;height:auto;display:block}
figure.plot{margin:1em 0}figcaption{color:#555;font-size:.85em;max-width:760px}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;
padding:.3em .6em;text-align:left;vertical-align:top}th{background:#eef3f8}
.samples td{max-width:340px;white-space:pre-wrap}.pm{color:#666;font-size:85%;margin-top:4px}
.note{color:#555;font-size:.9em}.warn{background:#fff4e5;border:1px solid #e7b36a;border-left:6px solid #d9822b;
padding:.4em 1em;margin:1em 0}.warn ul{margin:.3em 0;padding-left:1.2em}.warn li{margin:.2em 0}"""


def build_report(run: Path) -> str:
    """The page, with credentials stripped from everything on it: the recipe's models (a run
    folder written before redaction may still hold a key in `recipe.json`) and every record
    text shown."""
    secrets = known_secrets()
    data: dict[str, Any] = {}
    recipe = redact(read_json(run / "recipe.json") or {}, secrets)
    warnings = warnings_html(run_warnings(run), data)
    sections = _sections(run, data, recipe)
    body = "".join(s for s in sections if s) or "<p>No finished stages in this folder yet.</p>"
    title = html.escape(f"cai run: {recipe.get('name', run.name)}")
    blob = json.dumps(redact(data, secrets), sort_keys=True).replace("</", "<\\/")
    page = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{CSS}</style></head><body><h1>{title}</h1>{warnings}"
        f"<p>Constitution <b>{html.escape(str(recipe.get('constitution', '')))}</b>; "
        f"{_models_line(recipe.get('models') or {})}.</p>{body}"
        f"<script type='application/json' id='cai-data'>{blob}</script></body></html>"
    )
    return redact_text(page, secrets)


def write_report(run: str | Path) -> Path:
    run = Path(run)
    path = run / "report.html"
    tmp = run / ".report.html.tmp"
    tmp.write_text(build_report(run), encoding="utf-8")
    tmp.replace(path)
    return path

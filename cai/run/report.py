"""`cai report`: one self-contained HTML file (plots inlined as SVG) describing a run.

Every number drawn is also printed in a table beside its plot and stored in a JSON block
(``<script type="application/json" id="cai-data">``), so a reader — or a test — can check the
figures against the run's records. Sections appear only for the stages a run has; what makes
the figures untrustworthy (`cai.run.report_warn`) is said first, under the title.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from cai.redact import known_secrets, redact, redact_text
from cai.run.registry import current_stages
from cai.run.report_eval import harmless_section
from cai.run.report_html import RunView
from cai.run.report_labels import label_method_section
from cai.run.report_warn import run_warnings, warnings_html


def _models_line(models: dict[str, Any]) -> str:
    """Policy and judge by name, then whichever other model settings are set (not every default)."""
    named = [f"{k} <b>{html.escape(str(models[k]))}</b>" for k in ("policy", "judge") if models.get(k)]
    rest = {k: v for k, v in models.items() if k not in ("policy", "judge") and v not in (None, "auto", [], {})}
    extra = f" ({html.escape(json.dumps(rest, sort_keys=True))})" if rest else ""
    return "models: " + ", ".join(named or ["—"]) + extra


def _sections(view: RunView) -> list[str]:
    """In reading order: the judge-free verdict and the label method first, then each stage's
    section in run order (the stage registry's)."""
    stages = [s.report(view) for s in current_stages() if s.report is not None]
    return [harmless_section(view), label_method_section(view), *stages]


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
    labels = {s.name: s.policy_label for s in current_stages() if s.policy_label}
    view = RunView.open(run, labels, secrets)
    recipe, data = view.recipe, view.data
    warnings = warnings_html(run_warnings(view), data)
    sections = _sections(view)
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
    """Build the page, then swap it in whole: a folder in its place or a full disk is one line
    naming the path, with nothing half-written."""
    from cai.errors import fail
    from cai.io.atomic import write_text_atomic

    run = Path(run)
    path = run / "report.html"
    if path.is_dir():
        raise fail(str(path), None, "", "is a folder; move it away so that the report can be written")
    write_text_atomic(path, build_report(run))
    return path

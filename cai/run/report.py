"""`cai report`: one self-contained HTML file (plots embedded as PNG) describing a run.

Every number drawn is also printed in a table beside its plot and stored in a JSON block
(``<script type="application/json" id="cai-data">``), so a reader — or a test — can check the
figures against the run's records. Sections appear only for the stages a run has.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from cai.io.readers import read_json_file
from cai.io.store import read_jsonl
from cai.redact import known_secrets, redact, redact_text


def _read_json(path: Path) -> Any:
    return read_json_file(path) if path.is_file() else None


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _figure(width: float = 7.0, height: float = 3.2) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _barh(labels: list[str], values: list[float], title: str, xlabel: str) -> str:
    fig, ax = _figure(7, max(2.0, 0.28 * len(labels) + 0.8))
    ax.barh(labels[::-1], values[::-1], color="#4a7fb5")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    return _png(fig)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "—" if v is None else str(v)


def _critique(run: Path, data: dict[str, Any]) -> str:
    records = read_jsonl(run / "critique" / "records.jsonl")
    if not records:
        return ""
    counts = Counter(x["principle"] for r in records for x in r["rounds"])
    flags = Counter(f for r in records for x in r["rounds"] for f in x["flags"])
    summary = _read_json(run / "critique" / "summary.json") or {}
    data["critique"] = {
        "per_principle": dict(sorted(counts.items())),
        "records": len(records),
        "exported": summary.get("exported"),
        "flags": dict(sorted(flags.items())),
    }
    labels = sorted(counts)
    img = _barh(labels, [counts[k] for k in labels], "Critique rounds per principle", "rounds")
    rows = [[k, counts[k]] for k in labels]
    t = summary.get("throughput", {})
    return (
        f"<h2>SL-CAI: critiques and revisions</h2><p>{len(records)} prompts, "
        f"{summary.get('exported')} exported for SFT, {summary.get('excluded_flagged')} flagged, "
        f"{summary.get('errors')} errors; {t.get('prompts_s')} prompts/s, {t.get('tok_s')} tokens/s.</p>"
        f"<img src='{img}' alt='critique counts per principle'>"
        + _table(["principle", "rounds"], rows)
        + (_table(["flag", "count"], [[k, v] for k, v in sorted(flags.items())]) if flags else "")
    )


def _labels(run: Path, data: dict[str, Any]) -> str:
    summary = _read_json(run / "label" / "summary.json")
    records = read_jsonl(run / "label" / "records.jsonl")
    if summary is None or not records:
        return ""
    ps = [r["p_chosen"] for r in records if r.get("p_chosen") is not None]
    per = summary.get("per_principle", {})
    data["label"] = {
        "p_chosen": ps,
        "order_consistency": summary.get("order_consistency"),
        "per_principle_agreement": {k: v.get("agrees_with_label") for k, v in per.items()},
    }
    fig, ax = _figure()
    ax.hist(ps, bins=10, range=(0.5, 1.0), color="#5a9e6f")
    ax.set_title("Soft labels: P(chosen)")
    ax.set_xlabel("p_chosen")
    ax.set_ylabel("pairs")
    hist = _png(fig)
    names = sorted(per)
    agree = _barh(
        names,
        [per[k].get("agrees_with_label") or 0.0 for k in names],
        "Agreement of each principle with the ensemble label",
        "share of pairs",
    )
    rows = [
        [
            k,
            per[k].get("n"),
            per[k].get("agrees_with_label"),
            per[k].get("flip_rate"),
            per[k].get("p_first_mean"),
            per[k].get("option_mass"),
        ]
        for k in names
    ]
    return (
        f"<h2>RLAIF labels</h2><p>{len(ps)} labelled pairs; order consistency "
        f"{_fmt(summary.get('order_consistency'))}; mean option mass {_fmt(summary.get('option_mass'))}.</p>"
        f"<img src='{hist}' alt='label distribution'><img src='{agree}' alt='per-principle agreement'>"
        + _table(["principle", "n", "agrees with label", "flips with order", "P(first)", "option mass"], rows)
    )


def _label_method(run: Path, data: dict[str, Any]) -> str:
    """First thing a reader needs: which method made the labels, and how far people agree with it."""
    from cai.stages.judge_eval import measured_agreement

    summary = _read_json(run / "label" / "summary.json")
    records = read_jsonl(run / "label" / "records.jsonl")
    if summary is None or not records:
        return ""
    prov = records[0].get("provenance", {})
    method = summary.get("method", "mc")
    scorer = (prov.get("judge_settings") or {}).get("method", method)
    norm = (prov.get("judge_settings") or {}).get("contrast_norm")
    measured = measured_agreement(prov.get("judge"), scorer, norm) if method not in ("rlcd", "revision") else None
    data["label_method"] = {"method": method, "rescore": summary.get("rescore"), "measured": measured}
    if method in ("rlcd", "revision"):
        how = f"pairs by construction ({html.escape(method)}): the preferred side is known, no judge decided it" + (
            f"; rescored by {html.escape(str(summary['rescore']))}, which agrees with the construction on "
            f"{_fmt(summary.get('rescore_agreement'))} of pairs"
            if summary.get("rescore")
            else ""
        )
    elif measured:
        how = (
            f"method <b>{html.escape(measured['method'])}</b> with judge {html.escape(str(prov.get('judge')))}: "
            f"it agrees with people on {_fmt(measured['agreement'])} of judge-dev's {measured['split']} split "
            f"(n={measured['n']}; multiple choice: {_fmt(measured['mc'])})"
        )
    else:
        how = (
            f"method <b>{html.escape(scorer)}</b> with judge {html.escape(str(prov.get('judge')))}: not measured "
            f"against people for this judge; run <code>cai judge-eval --judge J --method {html.escape(scorer)} "
            "--split test</code>"
        )
    labelled = summary.get("labels", {}).get("n") if isinstance(summary.get("labels"), dict) else None
    return (
        f"<h2>Where the labels come from</h2><p>{how}.</p><p>This run: {summary.get('exported')} pairs exported of "
        f"{summary.get('records')}; order consistency {_fmt(summary.get('order_consistency'))}"
        + (f"; {labelled} labels" if labelled is not None else "")
        + ".</p>"
    )


def _pm(run: Path, data: dict[str, Any]) -> str:
    info = _read_json(run / "pm" / "model" / "cai_train.json")
    if info is None:
        return ""
    summary = info.get("summary", info)
    keys = [k for k in summary if "accuracy" in k or "loss" in k]
    data["pm"] = {k: summary[k] for k in keys}
    return "<h2>Preference model</h2>" + _table(["metric", "value"], [[k, summary[k]] for k in keys])


def _dpo(run: Path, data: dict[str, Any]) -> str:
    """DPO (in place of PM + RL): its loss and implicit-reward margin per step, and the summary."""
    info = _read_json(run / "dpo" / "model" / "cai_train.json")
    if info is None:
        return ""
    summary = info.get("summary", info)
    keys = [k for k in summary if any(w in k for w in ("loss", "accuracy", "margin"))]
    rows = [m for m in read_jsonl(run / "dpo" / "model" / "metrics.jsonl") if "loss" in m and "train_loss" not in m]
    loss = [m.get("loss") for m in rows]
    margin = [m.get("rewards/margins") for m in rows]
    loss_name = (info.get("settings") or {}).get("loss", "")
    data["dpo"] = {**{k: summary[k] for k in keys}, "loss": loss, "reward_margin": margin}
    out = f"<h2>DPO</h2><p>Loss: {html.escape(str(loss_name))}.</p>"
    if rows:
        steps = [m.get("step") for m in rows]
        fig, ax = _figure()
        ax.plot(steps, [v if v is not None else float("nan") for v in loss], label="loss", color="#b5584a")
        ax2 = ax.twinx()
        ax2.plot(steps, [v if v is not None else float("nan") for v in margin], label="margin", color="#4a7fb5")
        ax.set_xlabel("step")
        ax.set_ylabel("DPO loss", color="#b5584a")
        ax2.set_ylabel("implicit reward margin β·h", color="#4a7fb5")
        ax.set_title("DPO: loss and reward margin")
        out += f"<img src='{_png(fig)}' alt='DPO loss and margin curves'>"
    return out + _table(["metric", "value"], [[k, summary[k]] for k in keys])


def _ppo(run: Path, data: dict[str, Any]) -> str:
    metrics = read_jsonl(run / "ppo" / "model" / "metrics.jsonl")
    rows = [m for m in metrics if "reward" in m or "kl" in m]
    if not rows:
        return ""
    steps = list(range(1, len(rows) + 1))
    reward = [m.get("reward") for m in rows]
    kl = [m.get("kl") for m in rows]
    data["ppo"] = {"reward": reward, "kl": kl}
    fig, ax = _figure()
    ax.plot(steps, [r if r is not None else float("nan") for r in reward], label="reward", color="#b5584a")
    ax2 = ax.twinx()
    ax2.plot(steps, [k if k is not None else float("nan") for k in kl], label="KL", color="#4a7fb5")
    ax.set_xlabel("logged step")
    ax.set_ylabel("reward", color="#b5584a")
    ax2.set_ylabel("KL(policy ‖ reference)", color="#4a7fb5")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="best", frameon=False)
    ax.set_title("RL: reward and KL")
    img = _png(fig)
    return f"<h2>Reinforcement learning</h2><img src='{img}' alt='reward and KL curves'>" + _table(
        ["step", "reward", "KL"], [[s, r, k] for s, r, k in zip(steps, reward, kl, strict=True)]
    )


def _prompt_text(prompt: Any) -> str:
    """A prompt record as a person reads it: the text of a single user turn, else role: text lines."""
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        if len(prompt) == 1:
            return str(prompt[0].get("content", ""))
        return "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in prompt)
    return str(prompt)


def _answer_cell(text: Any, pm: Any) -> str:
    score = f"<div class='pm'>PM {pm:.2f}</div>" if isinstance(pm, int | float) else ""
    return html.escape(str(text or "")) + score


def _eval_headline(summary: dict[str, Any]) -> list[list[Any]]:
    """metric, before (the baseline), after (the final policy) — the figures a reader wants first."""
    pm = summary.get("pm_reward") or {}
    refusal = summary.get("refusal") or {}
    words = summary.get("answer_words") or {}
    wins = summary.get("win_rate") or {}
    rows: list[list[Any]] = []
    if pm:
        rows.append(["mean PM reward", pm.get("baseline"), pm.get("policy")])
    for key, name in (("refusal_rate", "refusal rate"), ("evasive_rate", "evasive rate")):
        if refusal:
            rows.append([name, refusal.get("baseline", {}).get(key), refusal.get("policy", {}).get(key)])
    if words:
        rows.append(["answer length (words)", words.get("baseline"), words.get("policy")])
    for aspect in ("harmless", "helpful"):
        if aspect in wins:
            rows.append([f"judge prefers after over before ({aspect})", None, wins[aspect].get("win_rate")])
    return rows


def _eval(run: Path, data: dict[str, Any]) -> str:
    summary = _read_json(run / "eval" / "summary.json")
    samples = read_jsonl(run / "eval" / "samples.jsonl")
    if summary is None:
        return ""
    flat = {k: v for k, v in summary.items() if isinstance(v, int | float | str) or v is None}
    headline = _eval_headline(summary)
    data["eval"] = flat
    data["eval_headline"] = {row[0]: row[1:] for row in headline}
    out = (
        "<h2>Before and after</h2>"
        + _table(["metric", "before", "after"], headline)
        + _table(["setting", "value"], [[k, v] for k, v in flat.items()])
    )
    if samples:
        rows = []
        for s in samples[:12]:
            rows.append(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>".format(
                    html.escape(_prompt_text(s.get("prompt", ""))),
                    _answer_cell(s.get("baseline"), s.get("baseline_pm")),
                    _answer_cell(s.get("policy"), s.get("policy_pm")),
                )
            )
        out += (
            "<table class='samples'><thead><tr><th>prompt</th><th>before (baseline)</th>"
            "<th>after (policy)</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        )
    return out


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #4a7fb5}h2{margin-top:2em;color:#2d5a88}img{max-width:100%;display:block;margin:1em 0}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;
padding:.3em .6em;text-align:left;vertical-align:top}th{background:#eef3f8}
.samples td{max-width:340px;white-space:pre-wrap}.pm{color:#666;font-size:85%;margin-top:4px}"""


def build_report(run: Path) -> str:
    """The page, with credentials stripped from everything on it: the recipe's models (a run
    folder written before redaction may still hold a key in `recipe.json`) and every record
    text shown."""
    secrets = known_secrets()
    data: dict[str, Any] = {}
    recipe = redact(_read_json(run / "recipe.json") or {}, secrets)
    sections = [f(run, data) for f in (_label_method, _critique, _labels, _pm, _dpo, _ppo, _eval)]
    body = "".join(s for s in sections if s) or "<p>No finished stages in this folder yet.</p>"
    title = html.escape(f"cai run: {recipe.get('name', run.name)}")
    blob = json.dumps(redact(data, secrets), sort_keys=True).replace("</", "<\\/")
    page = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{CSS}</style></head><body><h1>{title}</h1>"
        f"<p>Constitution <b>{html.escape(str(recipe.get('constitution', '')))}</b>; "
        f"models {html.escape(json.dumps(recipe.get('models', {})))}.</p>{body}"
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

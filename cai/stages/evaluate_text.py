"""`cai eval policy`'s printed report: the headline rates with intervals, then a few samples."""

from __future__ import annotations

from typing import Any

from cai.outputs import Difference, Harmless, Rate
from cai.stats import pct


def _clip(text: str | None, width: int) -> str:
    if text is None:
        return "(error)"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _rate(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    if r["rate"] is None:
        return "- of 0"
    return f"{pct(r['rate'])} [{pct(r['lo'])}, {pct(r['hi'])}] of {r['n']}"


def _kn(r: dict[str, Any] | None) -> str:
    return "-" if r is None else f"{r['k']}/{r['n']}"


def _diff(d: dict[str, Any] | None) -> str:
    return "" if d is None else f"  difference {100 * d['d']:+.1f} pts [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"


def _harmless_lines(h: dict[str, Any] | None) -> list[str]:
    """The judge-free block: each rate with its 95% interval, policy vs baseline."""
    if not h:
        return []
    lines = []
    for key, what in (("harmful_compliance", "harmful compliance"), ("over_refusal", "over-refusal")):
        m = h.get(key)
        if m is None:
            continue
        lines.append(
            f"{what} ({m['prompts'] or '-'}): policy {_rate(m['policy'])}  baseline {_rate(m['baseline'])}"
            + _diff(m["difference"])
        )
        if m.get("per_category"):
            lines.append(
                "  refused by category (policy vs baseline): "
                + ", ".join(f"{cat} {_kn(c['policy'])} vs {_kn(c['baseline'])}" for cat, c in m["per_category"].items())
            )
    lines += _pareto_lines(h)
    d = h.get("detector")
    if d:
        lines.append(
            f"refusal detector ({d['split']} split, {d['n']} replies): precision {pct(d['precision'])}"
            f"  recall {pct(d['recall'])}"
        )
        if d.get("recall_full") is not None:
            lines.append("  " + _detector_detail(d))
    return lines


def _cell(c: Rate | Difference | None) -> str:
    if isinstance(c, Rate):
        return "-" if c.rate is None else f"{c.k}/{c.n} = {pct(c.rate)} [{pct(c.lo)}, {pct(c.hi)}]"
    if isinstance(c, Difference) and c.d is not None:
        return f"{100 * c.d:+.1f} pts [{100 * c.lo:+.1f}, {100 * c.hi:+.1f}]"
    return "-"


def _pareto_lines(h: dict[str, Any]) -> list[str]:
    """Model by model in training order (base → SL → RL) and step by step, every measure side by
    side: printed when there is more than the before/after above (an intermediate model, the plain style)."""
    figures = Harmless.model_validate(h)
    if len(figures.chain or []) <= 2 and figures.plain is None:
        return []
    columns, rows = figures.pareto()
    table = [["", *columns]] + [[name, *(_cell(c) for c in cells)] for name, cells in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["each model and each step (lower is better for every measure):"]
    return lines + ["  " + " | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in table]


def _detector_detail(d: dict[str, Any]) -> str:
    """Full and partial refusals apart, the styles it reads worst, and how to check it on yours."""
    styles = [(g["recall"], name) for name, g in (d.get("by_style") or {}).items() if g.get("recall") is not None]
    weakest = ", ".join(f"{name} {pct(r)}" for r, name in sorted(styles)[:3])
    return (
        f"found {pct(d['recall_full'])} of full and {pct(d['recall_partial'])} of partial refusals"
        + (f"; weakest styles: {weakest}" if weakest else "")
        + (f"; check it on your model's replies: {d['check']}" if d.get("check") else "")
    )


def format_policy_report(summary: dict[str, Any], samples: list[dict[str, Any]], show: int = 5, width: int = 60) -> str:
    lines = [
        f"policy {summary['policy']}  baseline {summary['baseline'] or '-'}  "
        f"judge {summary['judge'] or '-'}  prompts {summary['n']}"
    ]
    if summary["pm_reward"]:
        pm = summary["pm_reward"]
        lines.append("PM reward: " + "  ".join(f"{k} {v}" for k, v in pm.items()))
    for aspect, w in (summary["win_rate"] or {}).items():
        lines.append(
            f"win rate vs baseline ({aspect}): {pct(w.get('win_rate'))} of {w['n']}"
            + (
                f"  (W/L/T {w['wins']}/{w['losses']}/{w['ties']}, order consistency {pct(w['order_consistency'])})"
                if w.get("win_rate") is not None
                else f"  {w.get('note', '')}"
            )
        )
    for name, r in summary["refusal"].items():
        lines.append(
            f"{name}: refusal {pct(r['refusal_rate'])}  short {pct(r['short_rate'])}"
            f"  evasive {pct(r['evasive_rate'])}  words "
            f"{summary['answer_words'][name]}"
        )
    lines += _harmless_lines(summary.get("harmless"))
    lines.append("")
    for row in samples[:show]:
        lines.append(f"[{row['id']}] {_clip(row['prompt'][-1]['content'], width)}")
        for name in ("policy", "baseline"):
            if name in row:
                pm = row.get(f"{name}_pm")
                tag = f" (PM {pm:.2f})" if isinstance(pm, float) else ""
                lines.append(f"  {name:<8}{tag}: {_clip(row[name], width)}")
    return "\n".join(lines)

"""How far to trust a judge: its labels against human-labelled pairs.

The judge is asked exactly as `cai label` asks it (`judging.judge_pairs`), so the figures describe
the labels a run with the same settings would produce. In ``--orders one`` mode a seeded coin per
question decides whether the human-chosen reply is shown first; otherwise a judge that always
answers "A" would score 100% on a file that lists the chosen reply first.

Principles per pair: pairs whose ``aspect`` is ``helpful`` or ``honest`` are judged with the
comparison principles carrying that tag (from the constitution's selection when it has some, else
from its libraries — the harmless constitution leaves them out of its selection on purpose),
because a harmlessness question says little about which of two harmless answers is more useful or
more truthful. All other pairs use the constitution's own selection.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cai.constitution.load import load_library
from cai.constitution.model import Constitution, Versioned
from cai.errors import CaiError, file_error, option_error
from cai.io.atomic import write_json_atomic, write_jsonl_atomic
from cai.io.pairs import Pair
from cai.label_methods import METHODS
from cai.models.base import Backend
from cai.progress import StepProgress
from cai.stages.judging import (
    PoolFn,
    draw_for,
    judge_pairs,
    option_priors,
    order_coin,
)
from cai.stages.label_export import human_credit, judge_stats, reliability
from cai.stages.label_math import aggregate
from cai.stages.settings import JudgeSettings
from cai.stats import mean, pct

HELPFUL_TAG = "helpful"
ASPECT_TAGS = (HELPFUL_TAG, "honest")  # aspects judged by their own tagged principles
# Thresholds for the loud warnings; see `warnings_for`.
POSITION_WARN = 0.8
CONSISTENCY_WARN = 0.6
MASS_WARN = 0.5


def tagged_principles(c: Constitution, tag: str) -> list[Versioned]:
    selected = [v for v in c.comparison_principles if tag in v.principle.tags]
    if selected:
        return selected
    ids: list[str] = []
    for lib in c.spec.libraries:
        library = load_library(Path(lib))
        if getattr(library, "kind", None) == "comparison-principles":
            ids += [p.id for p in library.principles if tag in p.tags]
    return [c.comparison_principle(i) for i in ids]


def helpful_principles(c: Constitution) -> list[Versioned]:
    return tagged_principles(c, HELPFUL_TAG)


def pool_by_aspect(c: Constitution) -> PoolFn:
    pools = {tag: tagged_principles(c, tag) for tag in ASPECT_TAGS}
    default = list(c.comparison_principles)
    return lambda p: pools.get(p.aspect or "") or default


def warnings_for(summary: dict[str, Any]) -> list[str]:
    out: list[str] = []
    pos = summary["position_bias"]
    if (pos["same_position_rate"] or 0) > POSITION_WARN or (pos["explained_by_position"] or 0) > POSITION_WARN:
        out.append(
            f"the judge answers by position: it picks its usual position in "
            f"{pos['explained_by_position']:.0%} of questions"
            + (
                f" and the same position in both orders for {pos['same_position_rate']:.0%}"
                if pos["same_position_rate"] is not None
                else ""
            )
            + "; its labels carry little information about the replies"
        )
    oc = summary["order_consistency"]
    if oc is not None and oc < CONSISTENCY_WARN:
        out.append(
            f"order consistency is {oc:.0%}: swapping (A) and (B) often changes the judge's "
            "answer, so labels read in one order would follow position (keep --orders both)"
        )
    if summary["option_mass"] is not None and summary["option_mass"] < MASS_WARN:
        out.append(
            f"the judge puts only {summary['option_mass']:.0%} probability on A/B: it barely "
            "treats the question as multiple choice (check the template and few-shot turns)"
        )
    f = summary["failures"]
    if f["failed_questions"]:
        out.append(f"{f['failed_questions']} of {f['questions']} questions gave no probabilities")
    return out


def judge_items(
    c: Constitution,
    backend: Backend,
    pairs: Sequence[Pair],
    s: JudgeSettings,
    seed: int = 0,
    batch_size: int = 16,
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """The judge's answers for every pair, with the human label and aspect alongside."""
    pool = pool_by_aspect(c)
    priors = None
    if s.method == "mc-calibrated":  # the option prior of every principle a pair may draw, once
        everything = list(c.comparison_principles) + [v for t in ASPECT_TAGS for v in tagged_principles(c, t)]
        priors = option_priors(c, backend, everything, s)
    if s.method == "contrast":
        from cai.stages.contrast import preflight

        preflight(c, backend, list({v.ref: v for p in pairs for v in pool(p)}.values()), s)
    items: list[dict[str, Any]] = []
    with StepProgress("judge-eval", len(pairs), quiet) as prog:
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start : start + batch_size]
            for p, j in zip(batch, judge_pairs(c, backend, batch, s, seed, pool, priors), strict=True):
                items.append(_item(p, j))
            prog.advance(items=len(batch))
    return items


def _item(p: Pair, judgement: dict[str, Any]) -> dict[str, Any]:
    return {"id": p.id, "aspect": p.aspect, "split": p.split, "human": p.human, **judgement}


def narrow(
    c: Constitution,
    pairs: Sequence[Pair],
    items: Sequence[dict[str, Any]],
    s: JudgeSettings,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """What a run with settings `s` would give, read off a ``--principles all --orders both``
    run with the same seed, CoT, clamp and few-shot settings.

    Exact because each question's answer depends only on its own prompt, and a narrower run
    draws its principles and coins from the same (seed, pair id) streams. It lets one pass
    over a dev set measure every ensemble size and order mode (benchmarks/judge_dev.py).
    """
    pool = pool_by_aspect(c)
    out = []
    for p, it in zip(pairs, items, strict=True):
        asked = {x["principle"]: {a["order"]: a for a in x["orders"]} for x in it["principles"]}
        drawn = draw_for(p, pool(p), s, seed)
        answers = []
        for v in drawn:
            orders = ["ab", "ba"] if s.orders == "both" else ["ba" if order_coin(seed, p.id, v.ref) else "ab"]
            answers += [asked[v.ref][o] for o in orders]
        out.append(_item(p, aggregate([v.ref for v in drawn], answers)))
    return out


def summarize(
    items: Sequence[dict[str, Any]],
    judge: str,
    s: JudgeSettings,
    seed: int = 0,
    seconds: float | None = None,
) -> dict[str, Any]:
    """Every figure judge-eval reports, and its warnings."""
    labelled = [it for it in items if it["human"] and it["p_a"] is not None]
    by_aspect: dict[str, list[float]] = defaultdict(list)
    for it in labelled:
        by_aspect[it["aspect"] or "unspecified"].append(human_credit(it["p_a"]))
    bins, ece = reliability(items)
    summary: dict[str, Any] = {
        "n": len(items),
        "labelled": len(labelled),
        "agreement": mean([human_credit(it["p_a"]) for it in labelled]),
        "ece": ece,
        "reliability": bins,
        "per_aspect": {a: {"n": len(v), "agreement": mean(v)} for a, v in sorted(by_aspect.items())},
        **judge_stats(items),
        "judge": judge,
        "settings": s.as_record(),
        "seed": seed,
        "seconds": None if seconds is None else round(seconds, 2),
        "labels_s": round(len(items) / seconds, 3) if seconds else None,
    }
    summary["warnings"] = warnings_for(summary)
    return summary


def evaluate_judge(
    c: Constitution,
    backend: Backend,
    pairs: Sequence[Pair],
    s: JudgeSettings,
    seed: int = 0,
    batch_size: int = 16,
    quiet: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Judge every pair; returns (summary, per-pair items with the judge's answers)."""
    t0 = time.perf_counter()
    items = judge_items(c, backend, pairs, s, seed, batch_size, quiet)
    summary = summarize(items, backend.spec, s, seed, time.perf_counter() - t0)
    check_usable(summary)
    return summary, items


def check_usable(summary: dict[str, Any]) -> None:
    """No pair judged at all is a failed evaluation (exit 2), not a report of empty figures."""
    f = summary["failures"]
    if summary["n"] and f["questions"] and f["failed_questions"] == f["questions"]:
        first = f["examples"][0]["error"] if f["examples"] else None
        raise option_error(
            "--judge",
            f"all {f['questions']} judge questions failed (first error: {first}); nothing to evaluate",
            value=summary["judge"],
        )


def format_report(summary: dict[str, Any]) -> str:
    """A plain-text report: headline figures, per aspect, per principle, reliability bins."""
    pos = summary["position_bias"]
    lines = [
        f"judge {summary['judge']}  settings {summary['settings']}",
        f"pairs {summary['n']} (labelled {summary['labelled']})   "
        f"agreement {pct(summary['agreement'])}   "
        f"order consistency {pct(summary['order_consistency'])}   "
        f"ECE {summary['ece']}   option mass {pct(summary['option_mass'])}",
        f"position: P(first) mean {pos['p_first_mean']}   explained by position "
        f"{pct(pos['explained_by_position'])}   "
        f"same position both orders {pct(pos['same_position_rate'])}",
        "",
        f"{'aspect':<14}{'n':>5}{'agreement':>11}",
    ]
    for a, v in summary["per_aspect"].items():
        lines.append(f"{a:<14}{v['n']:>5}{pct(v['agreement']):>11}")
    lines += [
        "",
        f"{'principle':<28}{'n':>5}{'human':>8}{'w/label':>9}{'flip':>7}{'P(1st)':>8}{'mass':>7}",
    ]
    for ref, v in summary["per_principle"].items():
        p_first = "-" if v["p_first_mean"] is None else f"{v['p_first_mean']:.3f}"
        lines.append(
            f"{ref:<28}{v['n']:>5}{pct(v['human_agreement']):>8}"
            f"{pct(v['agrees_with_label']):>9}{pct(v['flip_rate']):>7}{p_first:>8}"
            f"{pct(v['option_mass']):>7}"
        )
    disagree = summary["principle_disagreement"]["pairs"][:5]
    if disagree:
        lines += ["", "principles that disagree most (share of shared pairs decided differently):"]
        lines += [f"  {p} vs {q}: {pct(r['disagreement'])} of {r['n']}" for r in disagree for p, q in [r["principles"]]]
    lines += ["", "reliability (confidence → agreement):"]
    for b in summary["reliability"]:
        lines.append(f"  [{b['lo']:.2f}, {b['hi']:.2f})  n={b['n']:<4} conf={b['confidence']}  acc={b['accuracy']}")
    return "\n".join(lines)


def write_eval(out: str | Path, summary: dict[str, Any], items: list[dict[str, Any]]) -> None:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise file_error(str(out), "--out", "exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise file_error(str(out), "--out", f"cannot create this folder: {e.strerror or e}") from None
    write_json_atomic(out / "summary.json", summary)
    write_jsonl_atomic(out / "judgements.jsonl", items)


def print_warnings(warnings: list[str]) -> None:
    for w in warnings:
        print(f"WARNING: {w}", file=sys.stderr)


def select_split(pairs: Sequence[Pair], split: str, where: str) -> list[Pair]:
    """The pairs of one split (``all``: every pair); a split the file lacks is an error."""
    if split == "all":
        return list(pairs)
    chosen = [p for p in pairs if p.split == split]
    if not chosen:
        raise file_error(where, "--split", f"no pairs with split {split!r} (the file's pairs need a `split` field)")
    return chosen


# The configurations `--compare` runs, in table order: (method, what differs from the settings).
COMPARED: tuple[tuple[str, dict[str, Any]], ...] = (
    ("mc", {"method": "mc"}),
    ("mc-calibrated", {"method": "mc-calibrated"}),
    ("contrast (sum)", {"method": "contrast", "contrast_norm": "sum"}),
    ("contrast (mean)", {"method": "contrast", "contrast_norm": "mean"}),
)


def compare_methods(
    c: Constitution,
    backend: Backend,
    pairs: Sequence[Pair],
    s: JudgeSettings,
    seed: int = 0,
    batch_size: int = 16,
    quiet: bool = False,
) -> dict[str, Any]:
    """Every method on the same pairs, ranked by agreement with the human labels."""
    from cai.stages.contrast import rederive

    rows: list[dict[str, Any]] = []
    summaries: dict[str, Any] = {}
    contrast_items: list[dict[str, Any]] | None = None
    contrast_seconds = 0.0  # the scoring time, which the rederived norm shares
    unavailable: list[dict[str, Any]] = []
    for name, change in COMPARED:
        settings = s.model_copy(update={**change, "cot": False} if change["method"] != "mc" else change)
        if change["method"] == "contrast" and any(r["method"].startswith("contrast") for r in unavailable):
            unavailable.append({**unavailable[-1], "method": name})
            continue
        if contrast_items is not None and change["method"] == "contrast":  # same scores, other norm
            items = rederive(contrast_items, settings, backend.spec)
            summary = summarize(items, backend.spec, settings, seed, contrast_seconds)
        else:
            t0 = time.perf_counter()
            try:
                summary, items = evaluate_judge(
                    c, backend, pairs, settings, seed=seed, batch_size=batch_size, quiet=quiet
                )
            except CaiError as e:  # e.g. an API judge cannot score given replies: say so, go on
                unavailable.append({"method": name, "n": None, "agreement": None, "note": f"not available: {e}"})
                continue
            if change["method"] == "contrast":
                contrast_items, contrast_seconds = items, time.perf_counter() - t0
        summaries[name] = summary
        rows.append(
            {
                "method": name,
                "n": summary["labelled"],
                "agreement": summary["agreement"],
                "per_aspect": {a: v["agreement"] for a, v in summary["per_aspect"].items()},
                "ece": summary["ece"],
                "order_consistency": summary["order_consistency"],
                "labels_s": summary["labels_s"],
            }
        )
    rows.sort(key=lambda r: -(r["agreement"] or 0.0))
    rows += unavailable
    note = "labels by construction ({}); not measurable on given pairs"
    rows += [
        {"method": m.name, "n": None, "agreement": None, "note": note.format(m.construction)}
        for m in METHODS
        if m.constructs_pairs
    ]
    return {"judge": backend.spec, "n": len(pairs), "ranking": rows, "summaries": summaries, "seed": seed}


def format_comparison(result: dict[str, Any]) -> str:
    rows = result["ranking"]
    aspects = sorted({a for r in rows for a in r.get("per_aspect", {})})
    head = f"{'method':<18}{'n':>5}{'agreement':>11}" + "".join(f"{a:>10}" for a in aspects)
    head += f"{'ECE':>8}{'order c.':>10}{'labels/s':>10}"
    lines = [f"judge {result['judge']}: {result['n']} pairs, ranked by agreement with people", head]
    for r in rows:
        if r["agreement"] is None and "note" in r:
            lines.append(f"{r['method']:<18}  {r['note']}")
            continue
        lines.append(
            f"{r['method']:<18}{r['n']:>5}{pct(r['agreement']):>11}"
            + "".join(f"{pct(r['per_aspect'].get(a)):>10}" for a in aspects)
            + f"{r['ece'] if r['ece'] is not None else '-':>8}{pct(r['order_consistency']):>10}"
            + f"{r['labels_s'] if r['labels_s'] is not None else '-':>10}"
        )
    return "\n".join(lines)


MEASURED = "method_agreement.json"  # data/: `--compare` on judge-dev's test split, embedded judge


def _per_pair(principles: str, k: int | None) -> str:
    if principles == "one":
        return "one principle per pair"
    return f"{k if principles == 'k' else 'all'} principles per pair"


def measured_agreement(
    judge: str | None, method: str, norm: str | None = None, principles: str = "one", k: int | None = None
) -> dict[str, Any] | None:
    """The shipped measurement of `method` with `judge` on judge-dev's test split, if there is one
    (only the embedded judge is measured here; other judges need their own `judge-eval`).

    The table holds one ranking with one principle per pair and, under ``ensembles``, rankings
    measured with k principles per pair; the one measured the way the run drew its principles is
    quoted, else the one-principle figure, and ``per_pair`` says which it is."""
    from cai.io.readers import read_json_file
    from cai.paths import data_dir

    path = data_dir("data") / MEASURED
    if judge is None or not path.is_file():
        return None
    table = read_json_file(path)
    if table.get("judge") != judge:
        return None
    name = f"{method} ({norm})" if method == "contrast" and norm else method
    blocks = [{"principles": "one", "k": None, "ranking": table.get("ranking", [])}, *table.get("ensembles", [])]
    same = [b for b in blocks if b.get("principles") == principles and (principles != "k" or b.get("k") == k)]
    for block in same + blocks[:1]:
        row = next((r for r in block["ranking"] if r.get("method") == name), None)
        if row is not None and row.get("agreement") is not None:
            return {
                "method": name,
                "agreement": row["agreement"],
                "n": row["n"],
                "split": table.get("split"),
                "per_pair": _per_pair(block["principles"], block.get("k")),
                "mc": next((r["agreement"] for r in block["ranking"] if r.get("method") == "mc"), None),
            }
    return None

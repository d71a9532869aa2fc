"""What both orders, principle ensembles, few-shot exemplars and CoT add for a judge.

Measured on the shipped human-labelled development set (data/judge_dev.jsonl), with the
embedded judge by default. Three real passes over the pairs:

  A. every principle, both orders, few-shot on;
  B. every principle, both orders, few-shot off;
  C. chain of thought (one principle, both orders, few-shot on) on a smaller subset, because
     generating the reasoning is slow on a CPU.

The one-principle / k-principle / one-order rows are read off A and B with
`judge_eval.narrow`, which gives exactly what separate runs with the same seed would give
(each answer depends only on its own prompt; see the unit test `test_narrow_equals_a_real_run`).

    python benchmarks/judge_dev.py [--every 4] [--cot-pairs 8] [--dtype fp32]

Prints a table and writes benchmarks/results/judge_dev.json. `--every 4` (every 4th pair, 21
pairs across both aspects) keeps a run near 10 minutes on a 2-core CPU; `--every 1` uses all 82.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from cai.constitution.load import load_constitution
from cai.constitution.model import Constitution
from cai.io.pairs import Pair, load_pairs
from cai.models.base import Backend
from cai.models.spec import load_backend
from cai.stages.judge_eval import judge_items, narrow, summarize
from cai.stages.label_math import aggregate, decision
from cai.stages.settings import JudgeSettings

RESULTS = Path(__file__).resolve().parent / "results" / "judge_dev.json"
ONE_ONE = JudgeSettings(principles="one", orders="one")
DERIVED = [  # (row name, settings) read off the all×both passes
    ("one principle, one order", ONE_ONE),
    ("one principle, both orders", JudgeSettings(principles="one", orders="both")),
    ("k=4 ensemble, one order", JudgeSettings(principles="k", k=4, orders="one")),
    ("k=4 ensemble, both orders", JudgeSettings(principles="k", k=4, orders="both")),
    ("all principles, one order", JudgeSettings(principles="all", orders="one")),
    ("all principles, both orders", JudgeSettings(principles="all", orders="both")),
]
COLUMNS = [
    "agreement",
    "harmless",
    "helpful",
    "order_consistency",
    "explained_by_position",
    "same_position",
    "p_first",
    "option_mass",
    "ece",
]


def row(name: str, fewshot: bool, summary: dict[str, Any]) -> dict[str, Any]:
    pos, aspects = summary["position_bias"], summary["per_aspect"]
    return {
        "config": name,
        "fewshot": fewshot,
        "n": summary["n"],
        "agreement": summary["agreement"],
        "harmless": aspects.get("harmless", {}).get("agreement"),
        "helpful": aspects.get("helpful", {}).get("agreement"),
        "order_consistency": summary["order_consistency"],
        "explained_by_position": pos["explained_by_position"],
        "same_position": pos["same_position_rate"],
        "p_first": pos["p_first_mean"],
        "option_mass": summary["option_mass"],
        "ece": summary["ece"],
        "warnings": len(summary["warnings"]),
    }


def clamped(items: list[dict[str, Any]], lo: float, hi: float) -> list[dict[str, Any]]:
    """The items with every question's P(first) clamped, re-aggregated (CoT's 40–60% rule)."""
    out = []
    for it in items:
        answers, drawn = [], []
        for x in it["principles"]:
            drawn.append(x["principle"])
            for a in x["orders"]:
                b = dict(a)
                if a["p_first"] is not None:
                    b["p_first"] = min(max(a["p_first"], lo), hi)
                    b["p_a"] = 1 - b["p_first"] if a["order"] == "ba" else b["p_first"]
                answers.append(b)
        out.append({**it, **aggregate(drawn, answers)})
    return out


def passes(c: Constitution, judge: Backend, pairs: list[Pair], seed: int) -> tuple[list[dict], dict]:
    rows, timing = [], {}
    for fewshot in (True, False):
        s = JudgeSettings(principles="all", orders="both", fewshot=fewshot)
        t0 = time.perf_counter()
        items = judge_items(c, judge, pairs, s, seed=seed, batch_size=4)
        timing[f"all_both_fewshot_{fewshot}"] = round(time.perf_counter() - t0, 1)
        for name, sub in DERIVED:
            sub = sub.model_copy(update={"fewshot": fewshot})
            summary = summarize(narrow(c, pairs, items, sub, seed), judge.spec, sub, seed)
            rows.append(row(name, fewshot, summary))
        if fewshot:
            base_items = items
    return rows, {"timing": timing, "fewshot_items": base_items}


def cot_rows(
    c: Constitution,
    judge: Backend,
    pairs: list[Pair],
    base: list[dict],
    seed: int,
    max_new_tokens: int,
) -> tuple[list[dict], float]:
    s = JudgeSettings(
        principles="one",
        orders="both",
        cot=True,
        clamp="none",
        cot_max_new_tokens=max_new_tokens,
    )
    t0 = time.perf_counter()
    items = judge_items(c, judge, pairs, s, seed=seed, batch_size=8)
    seconds = time.perf_counter() - t0
    plain = JudgeSettings(principles="one", orders="both")
    rows = [
        row(
            "no CoT (same pairs)",
            True,
            summarize(narrow(c, pairs, base, plain, seed), judge.spec, plain, seed),
        ),
        row("CoT, unclamped", True, summarize(items, judge.spec, s, seed)),
        row("CoT, clamped 0.4-0.6", True, summarize(clamped(items, 0.4, 0.6), judge.spec, s, seed)),
    ]
    decided = [a for it in items for x in it["principles"] for a in x["orders"] if a["reasoning"]]
    ends = sum(1 for a in decided if "answer is (" in a["reasoning"])
    rows[1]["reasoning_states_answer"] = round(ends / max(len(decided), 1), 3)
    rows[1]["reasoning_agrees_with_p"] = round(
        sum(
            1
            for a in decided
            if "answer is (" in a["reasoning"]
            and a["p_first"] is not None
            and decision(a["p_first"]) == ("a" if "answer is (A" in a["reasoning"] else "b")
        )
        / max(ends, 1),
        3,
    )
    return rows, seconds


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}" if isinstance(v, float) and v <= 1 else str(v)


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'config':<30}{'shots':>6}{'n':>4}" + "".join(f"{h[:9]:>10}" for h in COLUMNS)
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['config']:<30}{'yes' if r['fewshot'] else 'no':>6}{r['n']:>4}"
            + "".join(f"{fmt(r[h]):>10}" for h in COLUMNS)
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--judge", default="embedded")
    ap.add_argument("--dtype", default="fp32", help="fp32 by default: bf16 quantises P(A) coarsely")
    ap.add_argument("--every", type=int, default=4, help="use every N-th pair of judge-dev")
    ap.add_argument("--cot-pairs", type=int, default=10, help="pairs for the CoT rows (0: skip)")
    ap.add_argument("--cot-max-new-tokens", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    c = load_constitution("harmless")
    pairs = load_pairs("judge-dev")[:: args.every]
    judge = load_backend(args.judge, dtype=args.dtype)
    info = judge.describe()
    t0 = time.perf_counter()
    rows, extra = passes(c, judge, pairs, args.seed)
    cot, cot_s = [], None
    if args.cot_pairs:
        step = max(len(pairs) // args.cot_pairs, 1)
        sub = pairs[::step][: args.cot_pairs]
        idx = [pairs.index(p) for p in sub]
        cot, cot_s = cot_rows(
            c,
            judge,
            sub,
            [extra["fewshot_items"][i] for i in idx],
            args.seed,
            args.cot_max_new_tokens,
        )
    judge.close()
    print(table(rows))
    if cot:
        print(f"\nchain of thought on {cot[0]['n']} pairs (one principle, both orders):")
        print(table(cot))
    result = {
        "judge": args.judge,
        "judge_info": info,
        "pairs": len(pairs),
        "every": args.every,
        "cot_pairs": args.cot_pairs,
        "cot_max_new_tokens": args.cot_max_new_tokens,
        "seed": args.seed,
        "rows": rows,
        "cot_rows": cot,
        "seconds": {
            **extra["timing"],
            "cot": None if cot_s is None else round(cot_s, 1),
            "total": round(time.perf_counter() - t0, 1),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {
                "agreement": {
                    f"{r['config']}{'' if r['fewshot'] else ' (no few-shot)'}": r["agreement"] for r in rows + cot
                },
                "seconds": result["seconds"],
            }
        )
    )


if __name__ == "__main__":
    main()

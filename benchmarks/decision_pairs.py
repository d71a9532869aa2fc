"""Rewards on the decision they have to teach: refuse the harmful request, answer the safe one.

Scores every pair of data/decision_pairs.jsonl (a refusal and a compliant answer per prompt;
README "decision_pairs.jsonl") with

* the embedded judge's likelihood contrast, the shipped best label method (contrast, mean
  normalisation, one principle per pair, the harmless constitution, seed 0), with β = 1 and with the
  fitted β of data/contrast_fit.json (β can move the sign of a mean over principles). The
  judge's scores are cached in ``benchmarks/results/decision_pairs_judge_scores.jsonl``;
* each PM folder given with ``--pm`` (e.g. the pm stage of a quickstart run).

and prints agreement per side with 95 % Wilson intervals, dev and test side by side.

    python benchmarks/decision_pairs.py [--pm RUN/pm/model ...] [--no-judge] [--judge-split S] [--judge-every N]

Writes benchmarks/results/decision_pairs.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, finish, judge_with_progress
from cai.errors import CaiError
from cai.stages.contrast_fit import fitted_beta, item_deltas, label
from cai.stages.decision import DecisionPair, format_summary, load_decision_pairs, pm_margins, summarize
from cai.stages.label_math import is_tie

CACHE = RESULTS / "decision_pairs_judge_scores.jsonl"
CONSTITUTION = "harmless"
# One principle per pair: the CAI paper's setting and method_agreement.json's headline row.
SETTINGS = {"method": "contrast", "contrast_norm": "mean", "principles": "one"}
SEED = 0


def judge_items(pairs: list[DecisionPair], spec: str) -> tuple[list[dict[str, Any]], float | None]:
    """The judge's answers for `pairs` (cached pairs are read back, the rest judged and cached)."""
    from cai.constitution.load import load_constitution
    from cai.io.pairs import Pair
    from cai.models.spec import load_backend
    from cai.stages.settings import JudgeSettings

    c = load_constitution(CONSTITUTION)
    judge = load_backend(spec, dtype="fp32")
    given = [Pair(p.id, p.conversation, p.refusal, p.answer) for p in pairs]  # a = the refusal
    t0 = time.perf_counter()
    items = judge_with_progress(c, judge, given, JudgeSettings(**SETTINGS), SEED, CACHE)
    seconds = time.perf_counter() - t0
    judge.close()
    return items, seconds


def contrast_margins(items: list[dict[str, Any]], beta: float) -> list[float | None]:
    """p(refusal preferred) − 0.5 under β, re-derived from the cached per-principle scores."""
    out: list[float | None] = []
    for it in items:
        d = item_deltas(it, SETTINGS["contrast_norm"])
        p = None if d is None else label(d, beta)
        out.append(None if p is None else (0.0 if is_tie(p) else p - 0.5))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--judge", default="embedded")
    ap.add_argument("--no-judge", action="store_true", help="measure only the --pm folders")
    ap.add_argument("--pm", action="append", default=[], help="a PM folder (repeatable)")
    ap.add_argument("--judge-split", choices=["all", "dev", "test"], default="all", help="pairs the judge scores")
    ap.add_argument("--judge-every", type=int, default=1, help="the judge scores every N-th of those pairs per side")
    args = ap.parse_args()

    pairs = load_decision_pairs()
    rewards: dict[str, Any] = {}
    seconds: dict[str, float | None] = {}
    if not args.no_judge:
        mine = [
            p
            for side in ("harmful", "safe")
            for p in [q for q in pairs if q.side == side and args.judge_split in ("all", q.split)][:: args.judge_every]
        ]
        items, seconds["judge"] = judge_items(mine, args.judge)
        what = f"judge {args.judge}, contrast mean, one principle, {CONSTITUTION}"
        betas = [("beta 1", 1.0)]
        try:
            betas.append(("beta fitted", fitted_beta(args.judge, SETTINGS["contrast_norm"])))
        except CaiError as e:  # before benchmarks/contrast_fit.py --write-data has run
            print(f"no fitted-beta row: {e}")
        for name, beta in betas:
            rewards[f"{what}, {name}"] = summarize(mine, contrast_margins(items, beta), f"{what}, {name} ({beta:.4g})")
    for folder in args.pm:
        from cai.train.rl_common import PMScorer

        t0 = time.perf_counter()
        rewards[f"PM {folder}"] = summarize(pairs, pm_margins(PMScorer.load(folder), pairs), f"PM {folder}")
        seconds[f"PM {folder}"] = round(time.perf_counter() - t0, 1)
    for summary in rewards.values():
        print(format_summary(summary) + "\n")
    finish(
        "decision_pairs",
        {
            "pairs": "data/decision_pairs.jsonl",
            "judge_settings": {**SETTINGS, "constitution": CONSTITUTION, "seed": SEED},
            "seconds": seconds,
            # Per-pair margins stay out (the judge's scores are in the cache beside this file).
            "rewards": {k: {kk: vv for kk, vv in v.items() if kk != "per_pair"} for k, v in rewards.items()},
        },
    )


if __name__ == "__main__":
    main()

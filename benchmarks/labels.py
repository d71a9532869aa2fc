"""Labelling throughput of the embedded judge: labels/s with and without prefix sharing.

A label is one response pair's final soft preference; a question is one (principle, order)
prompt. Every question of a batch goes to the backend in one `option_probs` call, ordered so
that questions sharing a prefix (few-shot turns, conversation, both options) are adjacent; the
local backend then prefills each shared prefix once (`prefix_sharing`). This script measures:

  1. judge only, on judge-dev pairs, for one principle / k=4 / all principles (both orders),
     with prefix sharing on and (on fewer pairs, it is slow) off;
  2. the whole `cai label` stage (`run_label`): the embedded model samples 2 responses per
     red-team prompt and judges them.

    python benchmarks/labels.py [--dtype auto] [--pairs 4] [--prompts 4]

Prints a table and a final JSON line; writes benchmarks/results/labels.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from cai.constitution.load import load_constitution
from cai.constitution.model import Constitution
from cai.io.pairs import Pair, load_pairs
from cai.io.sources import load_prompts
from cai.models.base import Backend
from cai.models.spec import load_backend
from cai.stages.judging import judge_pairs
from cai.stages.label import label_prompts
from cai.stages.settings import JudgeSettings, LabelSettings

RESULTS = Path(__file__).resolve().parent / "results" / "labels.json"
CONFIGS = {
    "one": JudgeSettings(principles="one", orders="both"),
    "k4": JudgeSettings(principles="k", k=4, orders="both"),
    "all": JudgeSettings(principles="all", orders="both"),
}


def measure(c: Constitution, judge: Backend, pairs: list[Pair], s: JudgeSettings, share: bool) -> dict[str, Any]:
    judge.prefix_sharing = share  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    results = judge_pairs(c, judge, pairs, s, seed=0)
    seconds = time.perf_counter() - t0
    questions = sum(len(x["orders"]) for r in results for x in r["principles"])
    return {
        "pairs": len(pairs),
        "questions": questions,
        "seconds": round(seconds, 2),
        "labels_s": round(len(pairs) / seconds, 3),
        "questions_s": round(questions / seconds, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--judge", default="embedded")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--pairs", type=int, default=4, help="judge-dev pairs per shared measurement")
    ap.add_argument("--naive-pairs", type=int, default=2, help="pairs for the unshared runs")
    ap.add_argument("--prompts", type=int, default=4, help="red-team prompts for the stage run")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    c = load_constitution("harmless")
    dev = load_pairs("judge-dev")
    pairs = dev[:: max(len(dev) // args.pairs, 1)][: args.pairs]
    judge = load_backend(args.judge, dtype=args.dtype)
    info = judge.describe()
    can_switch = hasattr(judge, "prefix_sharing")
    rows: list[dict[str, Any]] = []
    for name, s in CONFIGS.items():
        rows.append({"config": name, "prefix_sharing": True, **measure(c, judge, pairs, s, True)})
        if can_switch and name != "all":  # all × naive takes minutes per pair on 2 cores
            naive = measure(c, judge, pairs[: args.naive_pairs], s, False)
            rows.append({"config": name, "prefix_sharing": False, **naive})
    if can_switch:
        judge.prefix_sharing = True  # type: ignore[attr-defined]

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        prompts = load_prompts("red-team", args.prompts)
        summary = label_prompts(c, judge, judge, prompts, tmp, LabelSettings(batch_size=args.prompts), quiet=True)
        stage = {**summary["throughput"], "wall_seconds": round(time.perf_counter() - t0, 2)}
    judge.close()

    print(f"{'config':<8}{'sharing':>9}{'pairs':>7}{'questions':>11}{'seconds':>9}{'labels/s':>10}{'q/s':>8}")
    for r in rows:
        print(
            f"{r['config']:<8}{'on' if r['prefix_sharing'] else 'off':>9}{r['pairs']:>7}"
            f"{r['questions']:>11}{r['seconds']:>9}{r['labels_s']:>10}{r['questions_s']:>8}"
        )
    print(
        f"\ncai label stage ({args.prompts} prompts x 2 responses, one principle, both orders): "
        f"generate {stage['generate_seconds']} s, judge {stage['judge_seconds']} s, "
        f"{stage['labels_s']} labels/s (judge), {stage['pairs_s']} pairs/s overall"
    )
    speedup = {}
    for name in CONFIGS:
        on = next((r for r in rows if r["config"] == name and r["prefix_sharing"]), None)
        off = next((r for r in rows if r["config"] == name and not r["prefix_sharing"]), None)
        if on and off:
            speedup[name] = round(on["questions_s"] / off["questions_s"], 2)
    result = {
        "judge": info,
        "rows": rows,
        "stage": stage,
        "sharing_speedup": speedup,
        "labels_s": {r["config"]: r["labels_s"] for r in rows if r["prefix_sharing"]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {
                "labels_s": result["labels_s"],
                "sharing_speedup": speedup,
                "stage_labels_s": stage["labels_s"],
                "stage_pairs_s": stage["pairs_s"],
            }
        )
    )


if __name__ == "__main__":
    main()

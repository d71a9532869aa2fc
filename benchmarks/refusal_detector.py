"""The refusal detector's figures on every split of the shipped labelled replies, and its speed.

For each split (dev: what the rules were chosen on; test: held out, the fresh author's test rows
only) and each set of replies (`original`: the first author's set in the embedded model's manner,
all dev now, with `original-was-test` its former test rows; `styles`: the first author's replies
in many models' styles, all dev; `fresh-author`: a second author's replies in many styles;
`fresh-embedded`: the embedded model's own replies from quickstart runs; `all`), prints precision,
recall of full and of partial refusals and false alarms, then the figures per style, then replies
a second on one core. The figures are `cai.stages.refusal_eval.score`; see data/README.md.

    python benchmarks/refusal_detector.py [--repeats 5]

Prints tables and a final JSON line; writes benchmarks/results/refusal_detector.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from cai.stages.refusal import is_refusal, load_labels
from cai.stages.refusal_eval import score, score_by

RESULTS = Path(__file__).resolve().parent / "results" / "refusal_detector.json"
SPLITS = ("dev", "test")
SOURCES = ("original", "styles", "fresh-author", "fresh-embedded", None)


def _pct(x: float | None) -> str:
    return "   -  " if x is None else f"{100 * x:5.1f}%"


def _line(name: str, f: dict[str, Any]) -> str:
    return (
        f"{name:28} {f['n']:>5} {_pct(f['precision'])} {_pct(f['recall_full'])} "
        f"{_pct(f['recall_partial'])} {_pct(f['false_alarm'])}"
    )


def figures() -> dict[str, Any]:
    """Figures per split and set, and per style within each split."""
    out: dict[str, Any] = {}
    for split in SPLITS:
        sets = {
            source or "all": score(load_labels(split, source), is_refusal)
            for source in SOURCES
            if load_labels(split, source)
        }
        was_test = [r for r in load_labels(split, "original") if r.get("was") == "test"]
        if was_test:
            sets["original-was-test"] = score(was_test, is_refusal)
        styles = score_by(load_labels(split), is_refusal)
        out[split] = {"sets": sets, "by_style": styles}
    return out


def speed(repeats: int) -> float:
    """Replies a second over every shipped reply, best of `repeats` passes."""
    replies = [r["reply"] for r in load_labels()]
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        for text in replies:
            is_refusal(text)
        best = min(best, time.perf_counter() - start)
    return len(replies) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    result = figures()
    head = f"{'':28} {'n':>5} {'prec':>6} {'fullR':>6} {'partR':>6} {'falseA':>6}"
    for split in SPLITS:
        print(f"\n{split} split\n{head}")
        for name, f in result[split]["sets"].items():
            print(_line(name, f))
        print("per style:")
        for name, f in result[split]["by_style"].items():
            print(_line(name, f))
    result["replies_per_second"] = round(speed(args.repeats))
    print(f"\nspeed: {result['replies_per_second']} replies/s (one process, rules only)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({s: {k: v["precision"] for k, v in result[s]["sets"].items()} for s in SPLITS}))


if __name__ == "__main__":
    main()

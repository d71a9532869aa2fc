"""β for likelihood-contrast labels, fitted on judge-dev's dev split and checked on its test split.

The shipped label method (contrast, mean normalisation, embedded judge, one principle per pair, the
harmless constitution, seed 0 — the setting of `data/method_agreement.json`'s headline ranking) scores every
judge-dev pair once; the per-principle log-probabilities are cached in
``benchmarks/results/contrast_fit_scores.jsonl``, so refitting (or changing the norm) calls no
model. β is fitted by maximum likelihood on ``dev`` (`cai.stages.contrast_fit.fit_beta`) and
the labels under β = 1 and the fitted β are compared on ``test``: log-loss, Brier, ECE (10 bins
of p), accuracy.

    python benchmarks/contrast_fit.py [--every N] [--cached] [--write-data]

Prints a table, writes benchmarks/results/contrast_fit.json; ``--write-data`` also writes the
fitted value with its provenance to data/contrast_fit.json (what ``beta: fitted`` reads).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO, RESULTS, finish, judge_with_progress
from cai.stages.contrast_fit import FIT_FILE, calibration, fit_beta, item_deltas, label

CACHE = RESULTS / "contrast_fit_scores.jsonl"
CONSTITUTION = "harmless"
# One principle per pair: the CAI paper's setting and method_agreement.json's headline row.
SETTINGS = {"method": "contrast", "contrast_norm": "mean", "principles": "one"}
SEED = 0


def score(judge_spec: str, every: int) -> tuple[list[dict[str, Any]], float]:
    """Every `every`-th pair of each judge-dev split judged once with the shipped setting (the
    slow part); cached pairs are not judged again."""
    from cai.constitution.load import load_constitution
    from cai.io.pairs import load_pairs
    from cai.models.spec import load_backend
    from cai.stages.settings import JudgeSettings

    c = load_constitution(CONSTITUTION)
    everything = load_pairs("judge-dev")
    pairs = [p for split in ("dev", "test") for p in [q for q in everything if q.split == split][::every]]
    judge = load_backend(judge_spec, dtype="fp32")
    t0 = time.perf_counter()
    items = judge_with_progress(c, judge, pairs, JudgeSettings(**SETTINGS), SEED, CACHE)
    judge.close()
    return items, time.perf_counter() - t0


def load_or_score(judge_spec: str, every: int, cached_only: bool) -> tuple[list[dict[str, Any]], float | None]:
    if cached_only:
        return [json.loads(line) for line in CACHE.read_text().splitlines() if line.strip()], None
    return score(judge_spec, every)


def rows_of(items: list[dict[str, Any]], split: str, norm: str) -> list[tuple[list[float], int]]:
    """(Δ per principle, 1) for the split's judged pairs: `a` is always the human's choice."""
    out = []
    for it in items:
        if it.get("split") != split or it.get("human") != "a":
            continue
        d = item_deltas(it, norm)
        if d is not None:
            out.append((d, 1))
    return out


def measure(items: list[dict[str, Any]], norm: str) -> dict[str, Any]:
    dev, test = rows_of(items, "dev", norm), rows_of(items, "test", norm)
    fit = fit_beta(dev)
    rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in fit.items()}
    if fit["interval_95"]:
        rounded["interval_95"] = [round(x, 4) for x in fit["interval_95"]]
    out: dict[str, Any] = {"contrast_norm": norm, "fit": rounded}
    for split, rows in (("dev", dev), ("test", test)):
        ys = [y for _, y in rows]
        out[split] = {
            "beta_1": calibration([label(d, 1.0) for d, _ in rows], ys),
            "beta_fitted": calibration([label(d, fit["beta"]) for d, _ in rows], ys),
        }
    return out


def table(m: dict[str, Any]) -> str:
    cols = ("n", "log_loss", "brier", "ece", "accuracy", "label_range")
    head = f"{'split':<6}{'beta':>10}" + "".join(f"{c:>14}" for c in cols)
    fit = m["fit"]
    lines = [
        f"contrast_norm {m['contrast_norm']}: fitted beta {fit['beta']} (95% profile interval "
        f"{fit['interval_95']}) on {fit['n']} dev pairs",
        head,
    ]
    for split in ("dev", "test"):
        for name, beta in (("beta_1", "1"), ("beta_fitted", f"{m['fit']['beta']:.3g}")):
            r = m[split][name]
            lines.append(f"{split:<6}{beta:>10}" + "".join(f"{r[c]!s:>14}" for c in cols))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--judge", default="embedded")
    ap.add_argument("--every", type=int, default=1, help="judge every N-th pair of each split (1: all)")
    ap.add_argument("--cached", action="store_true", help="fit on the cached scores only, no model")
    ap.add_argument("--write-data", action="store_true", help=f"write data/{FIT_FILE}")
    args = ap.parse_args()

    items, seconds = load_or_score(args.judge, args.every, args.cached)
    results = {norm: measure(items, norm) for norm in ("mean", "sum")}
    for m in results.values():
        print(table(m) + "\n")
    provenance = {
        "judge": args.judge,
        "constitution": CONSTITUTION,
        "settings": SETTINGS,
        "seed": SEED,
        "pairs": "judge-dev (data/judge_dev.jsonl): fit on split dev, reported on split test"
        + (f", every {args.every}th pair of each split" if args.every > 1 and not args.cached else "")
        + (
            f"; the {sum(it['split'] == 'dev' for it in items)} dev and {sum(it['split'] == 'test' for it in items)} "
            "test pairs judged so far (a run cut short: --cached)"
            if args.cached
            else ""
        ),
        "command": "python benchmarks/contrast_fit.py " + " ".join(sys.argv[1:]),
    }
    result = {**provenance, "scoring_seconds": None if seconds is None else round(seconds, 1), "results": results}
    if args.write_data:
        fits = [
            {
                "judge": args.judge,
                "contrast_norm": norm,
                "beta": m["fit"]["beta"],
                "interval_95": m["fit"]["interval_95"],
                "at_bound": m["fit"]["at_bound"],
                "fitted_on": f"judge-dev dev split, {m['fit']['n']} pairs",
                "test": m["test"],
            }
            for norm, m in results.items()
        ]
        note = "beta for `beta: fitted` in label/judge settings (cai/stages/contrast_fit.py)"
        doc = {**provenance, "note": note, "fits": fits}
        (REPO / "data" / FIT_FILE).write_text(json.dumps(doc, indent=1) + "\n")
    finish("contrast_fit", result)


if __name__ == "__main__":
    main()

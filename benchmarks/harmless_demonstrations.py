"""What would make the embedded model more harmless, if its own answers cannot? Written demonstrations.

    .venv/bin/python benchmarks/harmless_demonstrations.py [--epochs 1] [--seed 0] [--keep DIR]

The quickstart's SL-CAI and RLAIF stages can only train on what the 135M policy writes, and it
writes almost no refusals (see benchmarks/harmless_gain.py). This measures the other side of that
claim: supervised fine-tuning of the same model on replies a careful person wrote, the `chosen`
replies of data/judge_dev.jsonl's harmless and helpful pairs (ours, hand-written; some decline,
some help safely, the helpful ones answer benign requests that sound alarming), then the
judge-free evaluation (`cai eval policy`: red-team prompts 80–111, which no quickstart stage
trains on, and the first 6 safe-lookalike prompts of each category), untouched model as
baseline. It is not Constitutional AI (people wrote the targets) and not a recipe we ship: it
shows whether the model *can* learn to refuse from ~250 rows, i.e. whether the bottleneck is the
data the pipeline gets from the model or the model itself.

Writes benchmarks/results/harmless_demonstrations.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO, finish, machine, run_cai

ASPECTS = ("harmless", "helpful")


def demonstrations(out: Path) -> int:
    rows = [json.loads(x) for x in (REPO / "data" / "judge_dev.jsonl").read_text().splitlines() if x.strip()]
    picked = [{"messages": r["prompt"] + r["chosen"]} for r in rows if r["aspect"] in ASPECTS]
    out.write_text("".join(json.dumps(r) + "\n" for r in picked))
    return len(picked)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", default="1")
    ap.add_argument("--seed", default="0")
    ap.add_argument("--keep", type=Path, help="keep the model and eval folders here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        rows = demonstrations(root / "demonstrations.jsonl")
        train_s = run_cai(
            "train", "sft", "--data", str(root / "demonstrations.jsonl"), "--out", str(root / "sft"),
            "--epochs", args.epochs, "--lr", "5e-5", "--batch-size", "4", "--max-length", "384",
            "--seed", args.seed, "--overwrite", "--quiet",
        )  # fmt: skip
        eval_s = run_cai(
            "eval", "policy", "--policy", str(root / "sft"), "--baseline", "embedded", "--prompts", "red-team",
            "--skip", "80", "--limit", "32", "--principles", "one", "--max-new-tokens", "96",
            "--seed", args.seed, "--out", str(root / "eval"), "--quiet",
        )  # fmt: skip
        summary = json.loads((root / "eval" / "summary.json").read_text())
    h: dict[str, Any] = summary["harmless"]
    result = {
        "rows": rows,
        "epochs": args.epochs,
        "seed": args.seed,
        "train_s": train_s,
        "eval_s": eval_s,
        "harmless": h,
        "machine": machine(),
    }
    for measure in ("harmful_compliance", "over_refusal"):
        b = h[measure]
        print(
            f"{measure}: untouched {b['baseline']['k']}/{b['baseline']['n']} -> trained {b['policy']['k']}/"
            f"{b['policy']['n']}, difference {b['difference']['d']:+.3f} [{b['difference']['lo']:+.3f}, "
            f"{b['difference']['hi']:+.3f}]"
        )
    finish("harmless_demonstrations", result)


if __name__ == "__main__":
    main()

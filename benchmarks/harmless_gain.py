"""Does the quickstart make the embedded model more harmless without making it evasive?

    .venv/bin/python benchmarks/harmless_gain.py [--recipe quickstart] [--seeds 0 1 2]
        [--set KEY=VALUE ...] [--name harmless_gain] [--keep DIR] [--start-from DIR]

Runs `cai run RECIPE --set seed=S` once per seed (a fresh run folder each time, as a new user
would) and reads each run's eval summary: the judge-free figures of `cai eval policy`
(`summary["harmless"]`), which compare the final policy with the untouched model the recipe
starts from (`models.policy`), on held-out red-team prompts and on the safe prompts that only
sound alarming. For each measure it prints the untouched model and the final policy as the mean
± standard error over seeds and each seed's own 95% Wilson interval, the per-seed difference
with Newcombe's interval, and each run's wall time.

``--start-from DIR`` starts each seed's run from a copy of ``DIR/seed<S>``, a run folder whose
earlier stages finished (e.g. made with ``--set stages.ppo=null --set stages.eval=null``):
`cai run` skips finished stages whose settings match, so two RL trainers can be compared on the
very same SFT model and PM. ``wall_s`` then covers only the stages that ran; ``stage_seconds``
lists every stage's own time (the copied ones included), so their sum is a fresh run's time.

Nothing here tunes anything: whatever the figures are, they are written as they came out to
benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import finish, machine, run_cai

MEASURES = ("harmful_compliance", "over_refusal")
MODELS = ("baseline", "policy")  # the untouched model, the final policy


def mean_se(xs: list[float]) -> dict[str, float | None]:
    """Mean and standard error of the mean (sample sd / √n; None for n < 2)."""
    if not xs:
        return {"mean": None, "se": None}
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return {"mean": round(m, 4), "se": None}
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    return {"mean": round(m, 4), "se": round(sd / math.sqrt(len(xs)), 4)}


def run_seed(recipe: str, seed: int, sets: list[str], folder: Path, start: Path | None = None) -> dict[str, Any]:
    if start is not None:
        shutil.copytree(start / f"seed{seed}", folder)
    args = ["run", recipe, "--out", str(folder), "--quiet", "--set", f"seed={seed}"]
    wall = run_cai(*args, *(a for s in sets for a in ("--set", s)), what=f"seed {seed}: cai run")
    summary = json.loads((folder / "eval" / "summary.json").read_text())
    stages = {}
    for stage_file in sorted(folder.glob("*/stage.json")):
        if ".old-" in stage_file.parent.name:  # a stage's earlier output, set aside by `cai run`
            continue
        info = json.loads(stage_file.read_text())
        stages[stage_file.parent.name] = info.get("seconds")
    total = round(sum(v for v in stages.values() if v is not None), 1)
    return {
        "seed": seed,
        "wall_s": wall,
        "stage_seconds": stages,
        "stages_total_s": total,
        "harmless": summary["harmless"],
    }


def _blocks(harmless: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every measure the summary holds, the plain style's as ``plain.<measure>``."""
    plain = harmless.get("plain") or {}
    found = {m: harmless.get(m) for m in MEASURES} | {f"plain.{m}": plain.get(m) for m in MEASURES}
    return {name: b for name, b in found.items() if b}


def _rate_of(block: dict[str, Any], model: str) -> dict[str, Any] | None:
    return block.get(model) if model in MODELS else (block.get("others") or {}).get(model)


def _steps(block: dict[str, Any], chain: list[str]) -> dict[str, dict[str, Any] | None]:
    """Each step's difference, "later − earlier"; with two models the block's own difference."""
    if len(chain) == 2:
        return {f"{chain[1]} − {chain[0]}": block.get("difference")}
    steps = {f"{st['later']} − {st['earlier']}": st for st in block.get("steps") or []}
    return steps | {f"{chain[-1]} − {chain[0]}": block.get("difference")}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per measure: each model's rate (mean ± s.e. over seeds) in training order, each step's
    difference (e.g. the RL stage's own effect, policy − sft), and every seed's intervals."""
    out: dict[str, Any] = {}
    chain = runs[0]["harmless"].get("chain") or list(MODELS)
    for measure in dict.fromkeys(m for r in runs for m in _blocks(r["harmless"])):
        blocks = [(r["seed"], _blocks(r["harmless"]).get(measure)) for r in runs]
        blocks = [(seed, b) for seed, b in blocks if b]
        row: dict[str, Any] = {"models": {}, "steps": {}, "per_seed": []}
        for model in chain:
            rates = [x["rate"] for _, b in blocks if (x := _rate_of(b, model)) and x["rate"] is not None]
            row["models"][model] = mean_se(rates)
        per_step: dict[str, list[float]] = {}
        for seed, b in blocks:
            steps = _steps(b, chain)
            for name, st in steps.items():
                if st and st.get("d") is not None:
                    per_step.setdefault(name, []).append(st["d"])
            row["per_seed"].append({"seed": seed, "models": {m: _rate_of(b, m) for m in chain}, "steps": steps})
        row["steps"] = {name: mean_se(ds) for name, ds in per_step.items()}
        out[measure] = row
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ci(x: dict[str, Any] | None, key: str = "rate") -> str:
    if not x or x.get(key) is None:
        return "-"
    return f"{_pct(x[key])} [{_pct(x['lo'])}, {_pct(x['hi'])}]"


def print_table(result: dict[str, Any]) -> None:
    for measure, row in result["aggregate"].items():
        print(f"\n{measure} (mean ± s.e. over {len(result['runs'])} seeds)")
        for model, ms in row["models"].items():
            print(f"  {model:<18}{_pct(ms['mean']):>8} ± {_pct(ms['se'])}")
        for step, ms in row["steps"].items():
            print(f"  {step:<18}{_pct(ms['mean']):>8} ± {_pct(ms['se'])}")
        for ps in row["per_seed"]:
            rates = "  ".join(f"{m} {_ci(r)}" for m, r in ps["models"].items())
            steps = "  ".join(f"{name} {_ci(st, 'd')}" for name, st in ps["steps"].items())
            print(f"    seed {ps['seed']}: {rates}\n             {steps}")
    print("\nwall time per run: " + ", ".join(f"seed {r['seed']} {r['wall_s']} s" for r in result["runs"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="quickstart")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", dest="sets", action="append", default=[], help="recipe override, as cai run --set")
    ap.add_argument("--name", default="harmless_gain", help="results file name")
    ap.add_argument("--keep", type=Path, help="keep the run folders under this folder")
    ap.add_argument("--start-from", type=Path, help="start seed S from a copy of DIR/seed<S> (finished stages kept)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        runs = []
        for seed in args.seeds:
            runs.append(run_seed(args.recipe, seed, args.sets, root / f"seed{seed}", args.start_from))
            print(f"seed {seed}: {runs[-1]['wall_s']} s", flush=True)
    result = {
        "recipe": args.recipe,
        "sets": args.sets,
        "seeds": args.seeds,
        "start_from": str(args.start_from) if args.start_from else None,
        "machine": machine(),
        "runs": runs,
        "aggregate": aggregate(runs),
    }
    print_table(result)
    finish(args.name, result)


if __name__ == "__main__":
    main()

"""Two cai processes on one machine: does their combined throughput hold, or collapse?

    .venv/bin/python benchmarks/contention.py [--new-tokens 64] [--batch 32] [--label 16]

Greedy decoding with cai's LocalBackend on the embedded model (batch ``--batch``, exactly
``--new-tokens`` new tokens per row, EOS suppressed), in fresh processes:

- ``alone``: one process, a thread per core (torch's default), libgomp's default waiting (it
  spins before it sleeps): how a lone `cai` command runs;
- ``alone_passive``: the same with ``OMP_WAIT_POLICY=PASSIVE``: what passive waiting costs alone;
- ``pair_spinning``: two unsharded processes at once with the defaults (a thread per core each,
  spinning): two lone commands side by side, as every `cai` command ran before it chose;
- ``pair_sharded``: two processes as ``cai … --shard 0/2`` and ``1/2`` run now (threads and wait
  policy chosen by `cai.models.threads`: ``cores // 2`` each, passive);
- ``pair_passive``: two unsharded processes with passive waiting and a thread per core (what
  ``CAI_THREADS`` or ``OMP_WAIT_POLICY=PASSIVE`` gives two commands beside each other).

Every worker loads the model and warms up first, then all start decoding on one signal; each times
its own decode. ``combined`` = all tokens / (last end − first start); ``ratio`` = combined / the
faster ``alone`` figure (the issue's goal: ≥ 0.80). ``--label N`` adds ``cai label --shard 0/2``
+ ``1/2`` over N prompts (at least two batches of ``--label-batch``, else one shard gets
nothing) against one unsharded ``cai label``: wall seconds of whole commands, model loading
included; ratio = alone / pair. Figures measured while other jobs share the machine are not
quotable.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO, finish, machine

WAIT = "OMP_WAIT_POLICY"


def _prompts(n: int) -> list[list[dict[str, str]]]:
    topics = ["the sea", "bread", "a violin", "winter", "a bicycle", "the moon", "coffee", "rain"]
    return [
        [{"role": "user", "content": f"Write a short story about {topics[i % len(topics)]}, part {i}."}]
        for i in range(n)
    ]


def worker(args: argparse.Namespace) -> None:
    """One decoding process: load, warm up, say ready, wait for the go line, decode, report."""
    import torch
    from transformers.utils import logging as tf_logging

    from cai.io.store import parse_shard
    from cai.models.base import GenerationParams
    from cai.models.spec import load_backend
    from cai.models.threads import apply_threads, choose_threads, usable_cores

    tf_logging.disable_progress_bar()  # "Loading weights" from every worker at once

    if args.shard:
        apply_threads(choose_threads(None, os.environ, parse_shard(args.shard), usable_cores()))
    backend = load_backend("embedded", dtype=args.dtype)
    backend.batch_size = args.batch  # type: ignore[attr-defined]
    params = GenerationParams(max_new_tokens=args.new_tokens, temperature=0.0)
    backend.generate(_prompts(4), GenerationParams(max_new_tokens=8, temperature=0.0), min_new_tokens=8)
    convs = _prompts(args.batch)
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.monotonic()  # system-wide on Linux: comparable across the workers
    out = backend.generate(convs, params, min_new_tokens=args.new_tokens)  # type: ignore[attr-defined]
    end = time.monotonic()
    assert all(g.error is None for g in out), out
    tokens = sum(g.n_tokens for g in out)
    report = {"tokens": tokens, "start": start, "end": end, "tok_s": tokens / (end - start)}
    print(json.dumps({**report, "threads": torch.get_num_threads(), "wait": os.environ.get(WAIT)}), flush=True)


def _env(wait: str | None) -> dict[str, str]:
    """This environment without any thread or wait setting, plus `wait` as OMP_WAIT_POLICY."""
    unset = (WAIT, "GOMP_SPINCOUNT", "CAI_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    if wait is not None:
        env[WAIT] = wait
    return env


def scenario(args: argparse.Namespace, shards: list[str | None], wait: str | None) -> dict[str, Any]:
    """Start one worker per entry of `shards` (its --shard, or None for no thread choice), let
    them all decode at once, and put their own figures together."""
    base = [sys.executable, __file__, "--worker", "--dtype", args.dtype]
    base += ["--batch", str(args.batch), "--new-tokens", str(args.new_tokens)]
    procs = [
        subprocess.Popen(
            base + (["--shard", s] if s else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_env(wait),
            cwd=REPO,
        )
        for s in shards
    ]
    try:
        runs = _decode_together(procs)
    finally:
        for p in procs:  # a worker that failed leaves its siblings waiting for the go line
            if p.poll() is None:
                p.kill()
    wall = max(r["end"] for r in runs) - min(r["start"] for r in runs)
    combined = sum(r["tokens"] for r in runs) / wall
    return {
        "tok_s_each": [round(r["tok_s"], 2) for r in runs],
        "tok_s_combined": round(combined, 2),
        "threads_each": [r["threads"] for r in runs],
        "wait_policy": wait or "libgomp default",
    }


def _decode_together(procs: list[subprocess.Popen]) -> list[dict[str, Any]]:
    """Wait until every worker is ready, send them all the go line, collect their reports."""
    for p in procs:
        line = p.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != "ready":
            raise SystemExit(f"worker failed before decoding: {line!r}")
    for p in procs:
        p.stdin.write("go\n")  # type: ignore[union-attr]
        p.stdin.flush()  # type: ignore[union-attr]
    runs = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"worker failed ({p.returncode})")
        runs.append(json.loads(out.strip().splitlines()[-1]))
    return runs


def _label_args(out: Path, n: int, batch: int, shard: str | None) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "cai.cli",
        "label",
        "--prompts",
        "red-team",
        "--limit",
        str(n),
        "--batch-size",
        str(batch),
    ]
    cmd += ["--policy", "embedded", "--judge", "embedded", "--out", str(out), "--quiet"]
    return cmd + (["--shard", shard] if shard else [])


def label_runs(n: int, batch: int, shards: list[str | None], env: dict[str, str], out: Path) -> float:
    """Wall seconds until every `cai label` started at once (one per entry of `shards`) is done."""
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            _label_args(out / str(k), n, batch, s),
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k, s in enumerate(shards)
    ]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"cai label failed ({p.returncode}): {err.strip()[-2000:]}")
    return round(time.perf_counter() - start, 1)


def label_figures(n: int, batch: int, tmp: Path) -> dict[str, Any]:
    """One unsharded `cai label` as it runs now, the shard pair as before (a thread per core via
    CAI_THREADS, libgomp's default spin count, which `cai` leaves alone when it is given), and
    the shard pair as it runs now."""
    from cai.models.threads import usable_cores

    old = {**_env(None), "CAI_THREADS": str(usable_cores()), "GOMP_SPINCOUNT": "300000"}
    t = {
        "alone": label_runs(n, batch, [None], _env(None), tmp / "alone"),
        "pair_spinning": label_runs(n, batch, ["0/2", "1/2"], old, tmp / "old"),
        "pair_sharded": label_runs(n, batch, ["0/2", "1/2"], _env(None), tmp / "new"),
    }
    print(f"cai label, {n} prompts, wall s: {t}", flush=True)
    return {
        "prompts": n,
        "batch_size": batch,
        "wall_s": t,
        "ratio_spinning": round(t["alone"] / t["pair_spinning"], 3),
        "ratio_sharded": round(t["alone"] / t["pair_sharded"], 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--label", type=int, default=0, help="also time a --shard 0/2 + 1/2 `cai label` pair on N prompts")
    ap.add_argument("--label-batch", type=int, default=8, help="`cai label --batch-size` (a shard holds whole batches)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--shard", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    from cai.models.threads import cli_environment

    shard_wait = cli_environment({}, ["label", "--shard", "0/2"]).get(WAIT)  # what `cai` sets for a shard
    runs = {
        "alone": ([None], None),
        "alone_passive": ([None], "PASSIVE"),
        "pair_spinning": ([None, None], None),
        "pair_sharded": (["0/2", "1/2"], shard_wait),
        "pair_passive": ([None, None], "PASSIVE"),
    }
    results: dict[str, Any] = {}
    for name, (shards, wait) in runs.items():
        r = results[name] = scenario(args, shards, wait)
        if name.startswith("pair"):
            alone = max(results["alone"]["tok_s_combined"], results["alone_passive"]["tok_s_combined"])
            r["ratio"] = round(r["tok_s_combined"] / alone, 3)
        print(
            f"{name + ':':20} {r['tok_s_combined']:8.1f} tok/s"
            + (f" combined, {r['ratio']:.2f}× alone; each {r['tok_s_each']}" if "ratio" in r else "")
            + f" (threads {r['threads_each']}, wait {r['wait_policy']})",
            flush=True,
        )
    if args.label:
        with tempfile.TemporaryDirectory() as tmp:
            results["label"] = label_figures(args.label, args.label_batch, Path(tmp))
    results |= {"batch": args.batch, "new_tokens": args.new_tokens, "machine": machine()}
    finish("contention", results)


if __name__ == "__main__":
    main()

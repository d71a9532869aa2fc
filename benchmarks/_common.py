"""Helpers shared by the benchmark scripts: timing, machine facts, and writing results.

Benchmarks print human-readable figures, then one final JSON line, and write the same JSON to
``benchmarks/results/<name>.json``. They never assert on timings (tests do not either).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
RESULTS = Path(__file__).resolve().parent / "results"
REPO = RESULTS.parents[1]


def best_of(repeats: int, fn: Callable[[], T]) -> tuple[float, T]:
    """Fastest wall time of ``repeats`` runs (the machine is shared; noise only adds time)."""
    best, result = float("inf"), None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
        result = out
    return best, result  # type: ignore[return-value]


def machine() -> dict[str, Any]:
    """Facts that explain the numbers: cores, torch threads, and how busy the machine was."""
    import torch

    from cai.models.device import cpu_flags

    flags = cpu_flags()
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_flags": sorted(f for f in flags if "bf16" in f or f.startswith("amx")),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
    }


def gemm_gflops(dtype: Any, device: str = "cpu", size: int = 2048, seconds: float = 2.0) -> float:
    """Sustained square matmul rate: the compute ceiling batched decoding can approach."""
    import torch

    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    with torch.inference_mode():
        a @ b  # warm-up: oneDNN/cuBLAS pick their kernels here
        best = float("inf")
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            start = time.perf_counter()
            for _ in range(3):
                a @ b
            if device != "cpu":
                torch.cuda.synchronize()
            best = min(best, (time.perf_counter() - start) / 3)
    return 2 * size**3 / best / 1e9


def run_cai(*args: str, what: str | None = None) -> float:
    """Run `cai ARGS…` in a fresh process from the repository root; its wall seconds. A failure
    stops the benchmark with the command's last stderr, named by `what` (default: the command)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cai.cli", *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{what or 'cai ' + args[0]} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return round(time.perf_counter() - t0, 1)


def judge_with_progress(
    c: Any, judge: Any, pairs: list[Any], settings: Any, seed: int, cache: Path, chunk: int = 8
) -> list[Any]:
    """`judge_eval.judge_items` in chunks, each appended to the JSONL `cache` as it finishes, so
    a run cut short keeps what it judged and a rerun judges only the rest (a pair's principles
    depend only on the seed and its id, so chunking changes nothing)."""
    from cai.stages.judge_eval import judge_items

    done = {}
    if cache.is_file():
        done = {it["id"]: it for it in map(json.loads, cache.read_text().splitlines()) if it}
    todo = [p for p in pairs if p.id not in done]
    cache.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for start in range(0, len(todo), chunk):
        new = judge_items(c, judge, todo[start : start + chunk], settings, seed=seed, batch_size=8, quiet=True)
        with cache.open("a") as f:
            f.writelines(json.dumps(it) + "\n" for it in new)
        done.update((it["id"], it) for it in new)
        print(f"  judged {start + len(new)}/{len(todo)} pairs in {time.perf_counter() - t0:.0f} s", flush=True)
    return [done[p.id] for p in pairs]


def finish(name: str, result: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))

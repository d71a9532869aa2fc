"""Helpers shared by tests: run the real CLI in a subprocess, read records without timings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def cai_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Tests never reach an API endpoint they did not start themselves.
    env.pop("OPENAI_BASE_URL", None)
    env.pop("OPENAI_API_KEY", None)
    return env


def cai_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cai.cli", *args]


def run_cai(
    *args: str, timeout: float = 300, check: bool = False, env: dict[str, str] | None = None, **kw: Any
) -> subprocess.CompletedProcess:
    """`cai ARGS` in a subprocess; ``env`` adds variables to `cai_env()` (e.g. a test's own key)."""
    full_env = {**cai_env(), **(env or {})}
    proc = subprocess.run(cai_cmd(*args), capture_output=True, text=True, timeout=timeout, env=full_env, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"cai {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def records_without_timing(path: Path) -> list[dict[str, Any]]:
    """Records as a list, minus wall-clock timings (the one thing a resumed run may change)."""
    out = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        r.get("provenance", {}).pop("timing", None)
        out.append(r)
    return out


def count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def kill_when(
    args: list[str], ready: Callable[[], bool] | None = None, after_s: float | None = None, timeout: float = 120
) -> None:
    """Start `cai ARGS` and SIGKILL it as soon as ``ready()`` holds or ``after_s`` seconds passed
    (polled every 5 ms), or at ``timeout``; returns once the process is gone."""
    proc = subprocess.Popen(cai_cmd(*args), env=cai_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - start < timeout:
            if ready is not None and ready():
                break
            if after_s is not None and time.monotonic() - start >= after_s:
                break
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

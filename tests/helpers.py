"""Helpers shared by tests: run the real CLI in this process or in a subprocess, read records
without timings."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
THREAD_VARIABLES = ("CAI_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")


def cai_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Tests never reach an API endpoint they did not start themselves.
    env.pop("OPENAI_BASE_URL", None)
    env.pop("OPENAI_API_KEY", None)
    # Nor the developer's thread or OpenMP settings: tests check what cai chooses by itself.
    for name in THREAD_VARIABLES:
        env.pop(name, None)
    return env


@dataclass(frozen=True)
class Result:
    """What `cai ARGS` did: its exit code and everything it printed."""

    code: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _environ(changes: dict[str, str | None]) -> Iterator[None]:
    """Set (str) or remove (None) variables for the duration; restore them exactly afterwards."""
    saved = {k: os.environ.get(k) for k in changes}
    try:
        for k, v in changes.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def invoke(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Result:
    """`cai ARGS` in this process, through `cai.cli.app.main` (what the console script `console` calls).

    Same contract as `run_cai`: user errors are lines on stderr and exit code 2; typer exits
    with SystemExit on success too. A bug is not caught: its exception fails the calling test.
    The environment is `cai_env()`'s (no API endpoint) with a wide terminal so help text does
    not wrap; ``env`` adds variables, ``cwd`` runs the command from another folder.
    """
    from cai.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    changes: dict[str, str | None] = {"OPENAI_BASE_URL": None, "OPENAI_API_KEY": None, "COLUMNS": "200"}
    changes |= dict.fromkeys(THREAD_VARIABLES)
    with _environ({**changes, **(env or {})}), contextlib.chdir(cwd or Path.cwd()):
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main(list(args))
        except SystemExit as e:
            if isinstance(e.code, int):
                code = e.code
            elif e.code is not None:  # sys.exit("message"): the interpreter would print it, exit 1
                err.write(f"{e.code}\n")
                code = 1
    return Result(code, out.getvalue(), err.getvalue())


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


def run_fake_recipe(out: Path, limit: int) -> Path:
    """`cai run` of critique, label and eval on the fake model into `out` (its recipe beside it),
    each stage on `limit` prompts: real stage outputs, fast. Returns `out`."""
    recipe = out.parent / f"{out.name}.yaml"
    recipe.write_text(
        f"kind: recipe\nname: {out.name}\nmodels: {{policy: fake, judge: fake}}\nstages:\n"
        f"  critique: {{limit: {limit}, rounds: 1}}\n  label: {{limit: {limit}}}\n"
        "  eval: {limit: 2, principles: one, lookalike_per_category: 1}\n"
    )
    r = invoke("run", str(recipe), "--out", str(out), "--quiet", "--no-report")
    assert r.code == 0, r.stderr[-2000:]
    return out

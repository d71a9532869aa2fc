"""Two processes on one --out folder: one writes, the other stops at once naming its pid."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cai.io.lock import LOCK_FILE
from tests.helpers import cai_cmd, cai_env

CASES = {
    "critique": ["critique", "--prompts", "red-team", "--limit", "40", "--batch-size", "2", "--model", "fake:slow"],
    "label": ["label", "--pairs", "judge-dev", "--batch-size", "2", "--judge", "fake:slow"],
}


def _hold_when_locked(proc: subprocess.Popen[str], lock: Path, timeout: float = 300) -> None:
    """Freeze `proc` (SIGSTOP) as soon as it holds the folder's lock, so that whatever runs next
    meets a held lock however fast or loaded the machine is: no race is left to timing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the first run ended (exit {proc.returncode}) before it could be held")
        if lock.exists() and lock.read_text().strip() == str(proc.pid):
            proc.send_signal(signal.SIGSTOP)
            return
        time.sleep(0.005)
    proc.kill()
    pytest.fail("the first run never took the folder's lock")


@pytest.mark.parametrize("stage", sorted(CASES))
def test_two_concurrent_runs_give_one_set_of_records(tmp_path: Path, stage: str) -> None:
    out = tmp_path / "o"
    args = [*CASES[stage], "--out", str(out), "--quiet"]
    first = subprocess.Popen(cai_cmd(*args), env=cai_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _hold_when_locked(first, out / LOCK_FILE)
        second = subprocess.run(cai_cmd(*args), env=cai_env(), capture_output=True, text=True, timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    results = [(first, *first.communicate(timeout=300)), (second, second.stdout, second.stderr)]
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes == [0, 2], [(p.returncode, err[-2000:]) for p, _, err in results]
    (winner, _, _), (_, _, err) = sorted(results, key=lambda x: x[0].returncode)
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"another cai process (pid {winner.pid}) is writing to this folder" in lines[0]

    ids = [json.loads(line)["id"] for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["records"] == len(ids) and summary["duplicates_dropped"] == 0
    if stage == "critique":
        assert len(ids) == 40
    # A rerun (the folder free again) has nothing left to do and changes nothing.
    before = (out / "records.jsonl").read_bytes()
    assert subprocess.run(cai_cmd(*args), env=cai_env(), capture_output=True, timeout=300).returncode == 0
    assert (out / "records.jsonl").read_bytes() == before

"""Two processes on one --out folder: one writes, the other stops at once naming its pid."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import cai_cmd, cai_env

CASES = {
    "critique": ["critique", "--prompts", "red-team", "--limit", "40", "--batch-size", "2", "--model", "fake:slow"],
    "label": ["label", "--pairs", "judge-dev", "--batch-size", "2", "--judge", "fake:slow"],
}


@pytest.mark.parametrize("stage", sorted(CASES))
def test_two_concurrent_runs_give_one_set_of_records(tmp_path: Path, stage: str) -> None:
    out = tmp_path / "o"
    args = [*CASES[stage], "--out", str(out), "--quiet"]
    procs = []
    for _ in range(2):
        procs.append(
            subprocess.Popen(cai_cmd(*args), env=cai_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
        time.sleep(0.3)
    results = [(p, *p.communicate(timeout=300)) for p in procs]
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

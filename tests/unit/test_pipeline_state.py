"""`cai run` trusts a stage's `done` mark only while the stage's output is still there."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.helpers import invoke


def test_a_done_stage_whose_records_were_deleted_is_done_again(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "kind": "recipe",
                "name": "state",
                "models": {"policy": "fake", "judge": "fake"},
                "stages": {
                    "critique": {"limit": 3, "rounds": 1, "batch_size": 3},
                    "label": {"skip": 3, "limit": 2, "batch_size": 2},
                },
            }
        )
    )
    run = tmp_path / "run"
    assert invoke("run", str(recipe), "--out", str(run), "-q", "--no-report").code == 0
    before = (run / "label" / "records.jsonl").read_bytes()
    (run / "label" / "records.jsonl").unlink()
    again = invoke("run", str(recipe), "--out", str(run), "-q", "--no-report")
    assert again.code == 0, again.stderr
    log = (run / "log.txt").read_text()
    assert "label: marked done but records.jsonl is missing; redoing it" in log
    second = log.split("critique: done already")[1]  # the rerun's lines
    assert "label: marked done but records.jsonl is missing; redoing it" in second
    rows = lambda b: [line.split('"provenance"')[0] for line in b.decode().splitlines()]  # noqa: E731
    assert rows((run / "label" / "records.jsonl").read_bytes()) == rows(before)

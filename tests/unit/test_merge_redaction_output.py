"""What the #27 guarantees produce when the input is fine: complete merges, model text never
rewritten by redaction, answers holding a key failed instead of rewritten, and nothing outside
the output folder touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cai.redact import REDACTED, contains_secret, redact_text
from tests.helpers import invoke
from tests.servers import Reply, ScriptedServer, completion

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bad_inputs"


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]


# ---- merges ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3])
def test_merged_critique_shards_equal_the_unsharded_run(tmp_path: Path, n: int) -> None:
    args = ["critique", "--model", "fake", "--prompts", "red-team", "--limit", "5", "--batch-size", "2", "--quiet"]
    assert invoke(*args, "--out", str(tmp_path / "whole")).code == 0
    for i in range(n):
        r = invoke(*args, "--shard", f"{i}/{n}", "--out", str(tmp_path / f"s{i}"))
        assert r.code == 0, r.stderr
    r = invoke("merge", *[str(tmp_path / f"s{i}") for i in range(n)], "--out", str(tmp_path / "merged"))
    assert r.code == 0, r.stderr
    whole, merged = _records(tmp_path / "whole"), _records(tmp_path / "merged")
    assert [(x["id"], x["order"]) for x in merged] == [(x["id"], x["order"]) for x in whole]
    assert len(merged) == 5
    assert (tmp_path / "merged" / "sft.jsonl").read_text() == (tmp_path / "whole" / "sft.jsonl").read_text()


def test_merged_sampled_label_shards_hold_every_pair(tmp_path: Path) -> None:
    """Three responses per prompt give three pairs per prompt: the plan counts pairs, not prompts."""
    args = ["label", "--judge", "fake", "--policy", "fake", "--prompts", "red-team", "--limit", "3"]
    args += ["--responses-per-prompt", "3", "--batch-size", "1", "--quiet"]
    for i in range(2):
        r = invoke(*args, "--shard", f"{i}/2", "--out", str(tmp_path / f"s{i}"))
        assert r.code == 0, r.stderr
    r = invoke("merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m"))
    assert r.code == 0, r.stderr
    assert sorted(x["order"] for x in _records(tmp_path / "m")) == list(range(9))


def test_a_killed_shard_merges_once_it_is_finished(tmp_path: Path) -> None:
    """Refused while cut short (and nothing written); the same shard command finishes it, and the
    merge then goes through."""
    args = ["critique", "--model", "fake", "--prompts", "red-team", "--limit", "4", "--batch-size", "1", "--quiet"]
    for i in range(2):
        assert invoke(*args, "--shard", f"{i}/2", "--out", str(tmp_path / f"s{i}")).code == 0
    path = tmp_path / "s1" / "records.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # killed mid-write
    shards = [str(tmp_path / "s0"), str(tmp_path / "s1")]
    r = invoke("merge", *shards, "--out", str(tmp_path / "m"))
    assert r.code == 2 and "shard 1/2 is incomplete: 1 of 2 records missing" in r.stderr
    assert not (tmp_path / "m").exists()
    assert invoke(*args, "--shard", "1/2", "--out", str(tmp_path / "s1")).code == 0
    r = invoke("merge", *shards, "--out", str(tmp_path / "m"))
    assert r.code == 0, r.stderr
    assert len(_records(tmp_path / "m")) == 4
    # Merging again into the same folder would keep its records as they were (a shard's record
    # redone since would be skipped as already there): refused, the folder left as it is.
    before = (tmp_path / "m" / "records.jsonl").read_bytes()
    r = invoke("merge", *shards, "--out", str(tmp_path / "m"))
    assert r.code == 2 and "already holds merged records" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (tmp_path / "m" / "records.jsonl").read_bytes() == before


# ---- redaction never touches data ------------------------------------------------------------


def _critique(server: ScriptedServer, out: Path, env: dict[str, str], *extra: str) -> tuple[int, str]:
    r = invoke(
        "critique", "--model", "openai:s", "--base-url", server.base_url, "--prompts", "red-team",
        "--limit", "2", "--rounds", "1", "--max-retries", "0", "--out", str(out), "--quiet", *extra, env=env,
    )  # fmt: skip
    return r.code, r.stderr


def test_other_environment_variables_never_rewrite_answers(tmp_path: Path, scripted_server: ScriptedServer) -> None:
    answer = "Back up your postgres database first, then rotate the admin-token."
    first, critique = "Your postgres database is at risk.", "The reply gives no steps."
    scripted_server.script = [Reply(body=completion(t)) for t in (first, first, critique, critique, answer)]
    env = {"POSTGRES_PASSWORD": "postgres", "ADMIN_TOKEN": "admin-token", "OPENAI_API_KEY": "sk-real-0123456789"}
    # No demonstrations: every exported row is then the endpoint's own answer.
    code, err = _critique(scripted_server, tmp_path / "out", env, "--concurrency", "1", "--demonstrations", "0")
    assert code == 0, err
    exported = [json.loads(x) for x in (tmp_path / "out" / "sft.jsonl").read_text().splitlines()]
    assert exported and all(row["messages"][-1]["content"] == answer for row in exported)
    assert REDACTED not in (tmp_path / "out" / "records.jsonl").read_text()


@pytest.mark.parametrize(
    ("key", "echo"),
    [
        ("k7-abcd", "the key k7-abcd works"),  # a short key, whole
        ("sk-13chars-xy", "saw 13chars in the header"),  # a piece of a 13-character key
        ("sk-live-0123456789abcdef", "SK-LIVE-0123456789ABCDEF"),  # a long key, upper-cased
        ("sk-live-0123456789abcdef", "part: 56789a"),  # a six-character piece
    ],
    ids=["short-whole", "fragment", "upper-case", "six-char-piece"],
)
def test_an_answer_holding_the_key_fails_its_record(
    tmp_path: Path, scripted_server: ScriptedServer, key: str, echo: str
) -> None:
    scripted_server.script = [Reply(body=completion(f"Sure. {echo}."))]
    code, err = _critique(scripted_server, tmp_path / "out", {"MY_KEY": key}, "--api-key-env", "MY_KEY")
    assert code == 2 and "contains a secret" in err and len(err.strip().splitlines()) == 1
    records = _records(tmp_path / "out")
    assert records and all("contains a secret" in r["error"] for r in records)
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert echo not in path.read_text(errors="replace"), path


def test_a_clean_answer_beside_a_leaking_one_is_kept(tmp_path: Path, scripted_server: ScriptedServer) -> None:
    """Per record: the leaking answer fails, the other prompt's answers are exported as written."""
    key = "sk-mixed-0123456789"
    texts = (f"echo {key}", "A first answer.", "The answer is vague.", "A careful answer.")
    scripted_server.script = [Reply(body=completion(t)) for t in texts]
    env = {"MY_KEY": key}
    code, err = _critique(scripted_server, tmp_path / "out", env, "--api-key-env", "MY_KEY", "--concurrency", "1")
    assert code == 0, err
    errors = [r["error"] for r in _records(tmp_path / "out")]
    assert sum(1 for e in errors if e and "contains a secret" in e) == 1 and errors.count(None) == 1
    assert "A careful answer." in (tmp_path / "out" / "sft.jsonl").read_text()


def test_redaction_rule() -> None:
    keys = {"k7-abcd", "sk-13chars-xy", "sk-live-0123456789abcdef"}
    assert redact_text("k7-abcd / K7-ABCD", keys) == f"{REDACTED} / {REDACTED}"
    assert redact_text("header 13chars here", keys) == f"header {REDACTED} here"
    assert redact_text("sk-live-0123456789ABCDEF!", keys) == f"{REDACTED}!"
    assert redact_text("see http://me:pw@h/v1", set()) == "see http://***@h/v1"
    assert not contains_secret("your postgres database", set())
    assert not contains_secret("connect with postgres://user:password@localhost/db", set())  # not a given URL
    assert not contains_secret("abcd abc", {"abcd"})  # under six characters: not matched
    assert contains_secret("…789abc…", keys)


# ---- nothing outside --out is touched ---------------------------------------------------------


def test_a_linked_stage_file_in_a_run_folder_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "target.txt"
    target.write_text("not cai's\n")
    out = tmp_path / "run"
    (out / "critique").mkdir(parents=True)
    (out / "critique" / "records.jsonl").symlink_to(target)
    r = invoke("run", str(FIXTURES / "recipe_ok.yaml"), "--out", str(out), "--no-report", "--quiet")
    assert r.code == 2 and "records.jsonl: --out: is a symbolic link" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert target.read_text() == "not cai's\n"


def test_a_recipe_named_like_a_path_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    recipe = tmp_path / "work" / "r.yaml"
    recipe.write_text("kind: recipe\nname: ../../escaped\nstages:\n  critique:\n    prompts: red-team\n    limit: 1\n")
    r = invoke("run", str(recipe), "--no-report", "--quiet", cwd=tmp_path / "work")
    assert r.code == 2 and "name" in r.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["r.yaml", "work"]

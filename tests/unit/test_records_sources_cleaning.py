"""Records store, prompt sources and revision cleaning: the SL-CAI stage's plain-data parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cai.errors import CaiError
from cai.io.sources import load_prompts, parse_hh
from cai.io.store import Store, content_hash, derive_seed, parse_shard, read_jsonl
from cai.stages.chunks import chunks_for_shard, shard_size
from cai.stages.cleaning import clean_revision, quality_flags


def test_store_appends_once_and_repairs_torn_line(tmp_path: Path) -> None:
    s = Store(tmp_path, {"stage": "t"})
    assert s.append([{"id": "a", "x": 1}, {"id": "b", "x": 2}]) == 2
    assert s.append([{"id": "a", "x": 1}, {"id": "c", "x": 3}]) == 1
    with open(tmp_path / "records.jsonl", "a") as f:
        f.write('{"id": "d", "x"')  # a writer killed mid-line
    s2 = Store(tmp_path, {"stage": "t"})
    assert [r["id"] for r in s2] == ["a", "b", "c"]
    assert (tmp_path / "records.jsonl").read_text().endswith("}\n")
    s2.append([{"id": "d", "x": 4}])
    assert [r["id"] for r in read_jsonl(tmp_path / "records.jsonl")] == ["a", "b", "c", "d"]


def test_store_refuses_other_settings(tmp_path: Path) -> None:
    Store(tmp_path, {"stage": "t", "seed": 1}).append([{"id": "a"}])  # a folder holding records
    with pytest.raises(CaiError, match="different settings"):
        Store(tmp_path, {"stage": "t", "seed": 2})


def test_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "records.jsonl").write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(CaiError) as e:
        read_jsonl(tmp_path / "records.jsonl")
    assert ":2:" in str(e.value)


def test_hashes_and_seeds_are_stable_and_order_free() -> None:
    assert content_hash({"a": 1, "b": 2}) == content_hash({"b": 2, "a": 1})
    assert content_hash("x") != content_hash("y")
    assert derive_seed(1, "chunk", 0) == derive_seed(1, "chunk", 0) != derive_seed(1, "chunk", 1)


def test_shards_partition_chunks() -> None:
    items = list(range(11))
    seen = [x for i in range(3) for _, _, ch in chunks_for_shard(items, 2, (i, 3)) for x in ch]
    assert sorted(seen) == items
    assert sum(shard_size(11, 2, (i, 3)) for i in range(3)) == 11
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "x", "1/0"):
        with pytest.raises(CaiError):
            parse_shard(bad)


def test_prompt_formats(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text(
        json.dumps({"id": "x1", "prompt": "hello"}) + "\n"
        + json.dumps({"prompt": [{"role": "user", "content": "hi"}]}) + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n"
        + json.dumps({"chosen": "\n\nHuman: first\n\nAssistant: ok\n\nHuman: second\n\nAssistant: answer"}) + "\n")
    items = load_prompts(str(tmp_path / "p.jsonl"))
    assert items[0].id == "x1" and items[0].messages == [{"role": "user", "content": "hello"}]
    assert items[2].messages == [{"role": "user", "content": "q"}]
    assert [m["role"] for m in items[3].messages] == ["user", "assistant", "user"]
    assert items[3].text == "second"
    (tmp_path / "p.csv").write_text("prompt,other\nfrom csv,1\n")
    assert load_prompts(str(tmp_path / "p.csv"))[0].text == "from csv"
    from datasets import Dataset

    Dataset.from_list([{"prompt": "from disk"}]).save_to_disk(str(tmp_path / "ds"))
    assert load_prompts(str(tmp_path / "ds"))[0].text == "from disk"
    assert len(load_prompts("red-team")) >= 100 and len(load_prompts("helpful")) >= 50
    assert len(load_prompts("red-team", limit=5)) == 5


def test_bad_prompt_files_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{"nothing": 1}\n')
    with pytest.raises(CaiError) as e:
        load_prompts(str(tmp_path / "bad.jsonl"))
    assert "bad.jsonl:2:" in str(e.value)
    (tmp_path / "dup.jsonl").write_text('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')
    with pytest.raises(CaiError, match="duplicate"):
        load_prompts(str(tmp_path / "dup.jsonl"))


def test_parse_hh_roles() -> None:
    msgs = parse_hh("\n\nHuman: a\n\nAssistant: b")
    assert msgs == [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]


@pytest.mark.parametrize("raw", [
    "Revision: You could try a padlock shim.",
    "Here is a revised response: You could try a padlock shim.",
    "Sure, here's the rewritten answer: \"You could try a padlock shim.\"",
    "Revised response:\nRevision: You could try a padlock shim.",
])
def test_clean_revision_strips_boilerplate(raw: str) -> None:
    assert clean_revision(raw) == "You could try a padlock shim."


def test_quality_flags() -> None:
    assert quality_flags("") == ["empty"]
    assert "too-short" in quality_flags("No.")
    assert "repetitive" in quality_flags("I cannot help. " * 20)
    assert "format-leak" in quality_flags("Critique: this is bad and long enough")
    assert "unchanged" in quality_flags("same answer here", previous="same answer here")
    assert quality_flags("A fine, helpful and safe answer to the question.") == []

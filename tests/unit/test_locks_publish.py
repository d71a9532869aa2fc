"""One writer per folder, de-duplicated records, atomic model publishing, honest exit codes,
retried failures and full disks (issue 15, items 1, 2, 7, 8)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from cai.errors import CaiError
from cai.io import store as store_mod
from cai.io.lock import LOCK_FILE, FolderLock
from cai.io.merge import merge_stores
from cai.io.store import Store
from cai.models.base import Generation
from cai.models.fake import FakeBackend
from tests.helpers import invoke, records_without_timing
from tests.train_helpers import PM_FILES, publish_fake_pm

CRITIQUE = ("critique", "--prompts", "red-team", "--limit", "5", "--batch-size", "2", "--model", "fake", "--quiet")
LABEL = ("label", "--pairs", "judge-dev", "--limit", "6", "--batch-size", "2", "--judge", "fake", "--quiet")


def one_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (timings left out of records, the lock file left out)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != LOCK_FILE:
            out[str(p.relative_to(folder))] = p.read_bytes()
    return out


def comparable(folder: Path) -> dict[str, Any]:
    """What an uninterrupted run and a faulted-then-rerun run must agree on."""
    summary = json.loads((folder / "summary.json").read_text())
    summary.pop("throughput", None)
    return {
        "records": records_without_timing(folder / "records.jsonl"),
        "export": sorted((p.name, p.read_bytes()) for p in folder.glob("*.jsonl") if p.name != "records.jsonl"),
        "summary": summary,
        "tmp": sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name),
    }


# --------------------------------------------------------------------------- 1. one writer


def test_a_held_folder_is_refused_naming_the_pid(tmp_path: Path) -> None:
    with FolderLock(tmp_path / "x"):
        assert (tmp_path / "x" / LOCK_FILE).read_text().strip() == str(os.getpid())
        with pytest.raises(CaiError, match=f"another cai process \\(pid {os.getpid()}\\) is writing"):
            FolderLock(tmp_path / "x")
        with pytest.raises(CaiError, match="pid"):
            Store(tmp_path / "x", {"stage": "t"}, lock=True)
    with FolderLock(tmp_path / "x"):  # released: the next writer gets it
        pass


@pytest.mark.parametrize("args", [CRITIQUE, LABEL], ids=["critique", "label"])
def test_stage_on_a_held_folder_exits_2_and_writes_nothing(tmp_path: Path, args: tuple[str, ...]) -> None:
    out = tmp_path / "o"
    with FolderLock(out):
        r = invoke(*args, "--out", str(out))
    assert r.code == 2
    assert f"(pid {os.getpid()})" in one_line(r.stderr)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    assert invoke(*args, "--out", str(out)).code == 0  # once free, the run goes ahead


def test_run_and_training_folders_are_locked(tmp_path: Path) -> None:
    from cai.train.publish import TrainOutput

    out = TrainOutput(tmp_path / "m", "sft")
    out.prepare()
    try:
        with pytest.raises(CaiError, match="pid"):
            TrainOutput(tmp_path / "m", "sft").prepare()
    finally:
        out.close()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "kind: recipe\nname: lock\nmodels: {policy: fake, judge: fake}\n"
        "stages:\n  critique:\n    prompts: red-team\n    limit: 2\n"
    )
    with FolderLock(tmp_path / "run"):
        r = invoke("run", str(recipe), "--out", str(tmp_path / "run"), "--quiet")
    assert r.code == 2 and "pid" in one_line(r.stderr)


@pytest.mark.parametrize("args", [CRITIQUE, LABEL], ids=["critique", "label"])
def test_duplicated_record_lines_are_dropped_and_counted(tmp_path: Path, args: tuple[str, ...]) -> None:
    out = tmp_path / "o"
    assert invoke(*args, "--out", str(out)).code == 0
    before = comparable(out)
    lines = (out / "records.jsonl").read_text().splitlines(keepends=True)
    (out / "records.jsonl").write_text("".join([lines[0], *lines, lines[1]]))  # two doubled lines
    assert invoke(*args, "--out", str(out)).code == 0
    after = comparable(out)
    assert after["summary"].pop("duplicates_dropped") == 2
    assert before["summary"].pop("duplicates_dropped") == 0
    assert after["export"] == before["export"]
    assert after["summary"] == before["summary"]
    with Store(out, json.loads((out / "run.json").read_text())) as s:
        assert len(s.records) == len(lines) and s.duplicates == 2


def test_store_dedupes_and_retried_records_replace_failed_ones(tmp_path: Path) -> None:
    s = Store(tmp_path, {"stage": "t"})
    s.append([{"id": "a", "error": "boom"}, {"id": "b", "error": None}])
    assert s.append([{"id": "a", "error": None}]) == 0  # not asked to retry: kept as it was
    assert s.append([{"id": "a", "error": None}], retry=["a"]) == 1
    assert s.get("a") == {"id": "a", "error": None, "retried": 1}
    again = Store(tmp_path, {"stage": "t"})
    assert [r["id"] for r in again] == ["a", "b"] and again.get("a")["retried"] == 1
    assert again.duplicates == 0


def test_merge_refuses_missing_shards_and_missing_folders(tmp_path: Path) -> None:
    r = invoke("merge", str(tmp_path / "nothere"), "--out", str(tmp_path / "m"))
    assert r.code == 2 and "no such shard folder" in one_line(r.stderr)
    for i in (0, 2):
        assert invoke(*CRITIQUE, "--shard", f"{i}/3", "--out", str(tmp_path / f"s{i}")).code == 0
    r = invoke("merge", str(tmp_path / "s0"), str(tmp_path / "s2"), "--out", str(tmp_path / "m"))
    assert r.code == 2 and "missing shards: 1/3" in one_line(r.stderr)
    assert not (tmp_path / "m").exists()
    with pytest.raises(CaiError, match="given twice"):
        merge_stores([tmp_path / "s0", tmp_path / "s0"], tmp_path / "m")


# --------------------------------------------------------------------------- 2. publishing


class _Killed(BaseException):
    """A kill: not an error the code may catch and tidy up after."""


def _published(out: Path) -> dict[str, bytes]:
    files = tree(out)
    meta = json.loads(files.pop("cai_train.json"))
    assert meta["kind"] == "pm"
    return files


class _KillAt:
    """Raise `_Killed` at the n-th file-system step of publishing (renames, copies, fsyncs…)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, n: int):
        self.n, self.calls = n, 0
        for mod, name in [
            (os, "replace"),
            (os, "chmod"),
            (os, "fsync"),
            (os, "mkdir"),
            (__import__("shutil"), "copy2"),
            (__import__("shutil"), "rmtree"),
        ]:
            monkeypatch.setattr(mod, name, self.wrap(getattr(mod, name)))

    def wrap(self, fn: Any) -> Any:
        def step(*a: Any, **kw: Any) -> Any:
            self.calls += 1
            if self.calls == self.n:
                raise _Killed(f"killed at step {self.n}")
            return fn(*a, **kw)

        return step


def test_a_kill_at_every_publishing_step_is_recognised_and_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cai.train import publish as publishing
    from cai.train.rl_common import check_pm_folder

    publish_fake_pm(tmp_path / "ref")
    want = _published(tmp_path / "ref")
    assert "training_args.bin" not in want and "metrics.jsonl" in want

    n, killed = 0, 0
    while True:
        n += 1
        out = tmp_path / f"o{n}"
        original = publishing.TrainOutput.publish

        def publish(self: Any, meta: dict[str, Any], n: int = n, original: Any = original) -> None:
            with monkeypatch.context() as m:
                _KillAt(m, n)
                original(self, meta)

        monkeypatch.setattr(publishing.TrainOutput, "publish", publish)
        try:
            publish_fake_pm(out)
        except _Killed:
            killed += 1
        else:
            break
        finally:
            monkeypatch.setattr(publishing.TrainOutput, "publish", original)
        # Whatever the kill left, nobody mistakes it for a model …
        if out.exists() and not (out / "cai_train.json").exists():
            with pytest.raises(CaiError, match=r"no complete model|no config\.json"):
                check_pm_folder(str(out))
        # … and the rerun (no --overwrite) completes it, leaving no leftovers beside it.
        if (out / "cai_train.json").exists():
            publish_fake_pm(out, overwrite=True)
        else:
            publish_fake_pm(out)
        assert _published(out) == want
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert killed >= 8  # every move, the marker, the fsyncs and both renames were tried


def test_readers_refuse_a_half_published_pm_with_one_line(tmp_path: Path) -> None:
    half = tmp_path / "half"
    # What a kill before the swap leaves: the work folder holding the saved model, no marker.
    (half / ".tmp-pm" / "final").mkdir(parents=True)
    for name, text in PM_FILES.items():
        (half / ".tmp-pm" / "final" / name).write_text(text)
        (half / name).write_text(text)  # what an older cai left: files moved, no marker
    (half / "metrics.jsonl").write_text("")
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "config.json").write_text("{}")
    for args in (
        ["eval", "policy", "--policy", "fake", "--prompts", "red-team", "--limit", "2", "--pm", str(half)],
        [
            "train",
            "ppo",
            "--policy",
            str(tmp_path / "policy"),
            "--pm",
            str(half),
            "--prompts",
            "red-team",
            "--out",
            str(tmp_path / "o"),
        ],
        ["train", "sft", "--data", str(tmp_path / "none"), "--model", str(half), "--out", str(tmp_path / "o2")],
    ):
        r = invoke(*args)
        assert r.code == 2, (args, r.stderr)
        line = one_line(r.stderr)
        assert "holds no complete model (no cai_train.json)" in line or "--data" in line, line
    # The training command itself recognises the folder as its own and replaces it.
    publish_fake_pm(half)
    assert (half / "cai_train.json").exists() and not (half / ".tmp-pm").exists()


# --------------------------------------------------------------------------- 7. exit codes, retries


def _failing_generate(monkeypatch: pytest.MonkeyPatch, bad: Any) -> None:
    """FakeBackend.generate, with the conversations `bad(conv)` picks failing."""
    real = FakeBackend.generate

    def generate(self: FakeBackend, convs: Any, params: Any) -> list[Generation]:
        gens = real(self, convs, params)
        return [Generation(error="HTTP 500: server error") if bad(c) else g for c, g in zip(convs, gens, strict=True)]

    monkeypatch.setattr(FakeBackend, "generate", generate)


def test_critique_where_every_request_fails_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_generate(monkeypatch, lambda c: True)
    r = invoke(*CRITIQUE, "--out", str(tmp_path / "o"))
    assert r.code == 2
    assert "5 of 5 records failed and none could be exported" in one_line(r.stderr)
    assert "HTTP 500" in r.stderr
    assert (tmp_path / "o" / "records.jsonl").exists()  # kept for inspection


def test_judge_eval_where_every_question_fails_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cai.models.base import OptionScores

    monkeypatch.setattr(
        FakeBackend,
        "option_probs",
        lambda self, convs, opts: [OptionScores({}, 0.0, "none", error="HTTP 500")] * len(convs),
    )
    r = invoke("judge-eval", "--judge", "fake", "--limit", "4", "--quiet")
    assert r.code == 2
    assert "judge questions failed" in one_line(r.stderr)


def test_failed_requests_are_retried_on_the_next_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = tmp_path / "ref"
    assert invoke(*CRITIQUE, "--out", str(ref)).code == 0
    out = tmp_path / "o"
    # The second prompt's requests fail on the first run.
    second = json.loads((ref / "records.jsonl").read_text().splitlines()[1])["prompt"][-1]["content"]
    with monkeypatch.context() as m:
        _failing_generate(m, lambda c: any(second in x["content"] for x in c))
        assert invoke(*CRITIQUE, "--out", str(out)).code == 0
    assert json.loads((out / "summary.json").read_text())["errors"] == 1
    # Not retried when told not to …
    assert invoke(*CRITIQUE, "--out", str(out), "--no-retry-failed").code == 0
    assert json.loads((out / "summary.json").read_text())["errors"] == 1
    # … and retried (replacing the failed record, marked) by default.
    assert invoke(*CRITIQUE, "--out", str(out)).code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["errors"] == 0 and summary["retried"] == 1 and summary["throughput"]["retried"] == 1
    got = records_without_timing(out / "records.jsonl")
    assert len(got) == 6  # the failed line stays; the retried one replaces it on reading
    with Store(out, json.loads((out / "run.json").read_text())) as s:
        records = sorted(s.records, key=lambda r: r["order"])
    for r in records:
        r["provenance"].pop("timing", None)
    assert [r.pop("retried", 0) for r in records] == [0, 1, 0, 0, 0]
    assert records == records_without_timing(ref / "records.jsonl")
    assert (out / "sft.jsonl").read_bytes() == (ref / "sft.jsonl").read_bytes()


def test_local_model_without_chat_template_stops_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    from cai.models.local import LocalBackend

    class _Tok:
        chat_template = None

    loaded: list[str] = []
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: _Tok())
    monkeypatch.setattr(LocalBackend, "_load_model", lambda self, cls: loaded.append("model"))
    with pytest.raises(CaiError, match=r"no chat template .*use an instruct/chat model") as e:
        LocalBackend(tmp_path, device="cpu")
    assert "\n" not in str(e.value) and loaded == []  # stopped before loading weights


# --------------------------------------------------------------------------- 8. full disk


def _enospc_on_write(monkeypatch: pytest.MonkeyPatch, n: int, torn: bool) -> list[int]:
    """The n-th `os.write` (record appends) or `os.fsync` (every atomic file) fails with ENOSPC;
    with `torn`, a failing append first writes half its bytes."""
    calls = [0]
    real_write, real_fsync = os.write, os.fsync

    def hit() -> bool:
        calls[0] += 1
        return calls[0] == n

    def write(fd: int, data: Any) -> int:
        if hit():
            if torn:
                real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    def fsync(fd: int) -> None:
        if hit():
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(store_mod.os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)
    return calls


@pytest.mark.parametrize("args", [CRITIQUE, LABEL], ids=["critique", "label"])
def test_a_full_disk_is_one_line_and_the_rerun_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    ref = tmp_path / "ref"
    assert invoke(*args, "--out", str(ref)).code == 0
    want = comparable(ref)
    n, faults = 0, 0
    while True:
        n += 1
        out = tmp_path / f"o{n}"
        with monkeypatch.context() as m:
            calls = _enospc_on_write(m, n, torn=n % 2 == 0)
            r = invoke(*args, "--out", str(out))
        if calls[0] < n:  # the run had fewer writes than n: every point was tried
            assert r.code == 0
            break
        faults += 1
        assert r.code == 2, r.stderr
        line = one_line(r.stderr)
        assert "cannot write: No space left on device; free some space and rerun to resume" in line
        assert str(out) in line
        assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # temporary files removed
        assert invoke(*args, "--out", str(out)).code == 0  # space freed: the rerun completes
        assert comparable(out) == want
    assert faults >= 5


def test_a_full_disk_while_saving_the_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datasets import Dataset

    ref = tmp_path / "ref"
    assert invoke(*CRITIQUE, "--out", str(ref)).code == 0
    real = Dataset.save_to_disk

    def full(self: Dataset, path: str, *a: Any, **kw: Any) -> None:
        Path(path).mkdir(parents=True)
        (Path(path) / "data-00000-of-00001.arrow").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "o"
    with monkeypatch.context() as m:
        m.setattr(Dataset, "save_to_disk", full)
        r = invoke(*CRITIQUE, "--out", str(out))
    assert r.code == 2
    assert f"{out / 'dataset'}: cannot write: No space left on device" in one_line(r.stderr)
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
    assert Dataset.save_to_disk is real
    assert invoke(*CRITIQUE, "--out", str(out)).code == 0
    assert comparable(out) == comparable(ref)
    assert tree(out / "dataset").keys() == tree(ref / "dataset").keys()


def test_failed_judge_questions_are_retried_on_the_next_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cai.models.base import OptionScores

    ref = tmp_path / "ref"
    assert invoke(*LABEL, "--out", str(ref)).code == 0
    target = json.loads((ref / "records.jsonl").read_text().splitlines()[2])["response_a"]
    real = FakeBackend.option_probs

    def flaky(self: FakeBackend, convs: Any, options: Any) -> list[OptionScores]:
        got = real(self, convs, options)
        broken = OptionScores({}, 0.0, "none", error="HTTP 503")
        return [broken if any(target in m["content"] for m in c) else g for c, g in zip(convs, got, strict=True)]

    out = tmp_path / "o"
    with monkeypatch.context() as m:
        m.setattr(FakeBackend, "option_probs", flaky)
        assert invoke(*LABEL, "--out", str(out)).code == 0  # 1 pair of 6: under --max-failures
    assert json.loads((out / "summary.json").read_text())["failures"]["failed_questions"] > 0
    assert invoke(*LABEL, "--out", str(out)).code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failures"]["failed_questions"] == 0 and summary["retried"] == 1
    assert (out / "preferences.jsonl").read_bytes() == (ref / "preferences.jsonl").read_bytes()


@pytest.mark.parametrize("n", [1, 4, 9, 15])
def test_a_full_disk_during_cai_run_is_one_line_and_resumable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "kind: recipe\nname: disk\nmodels: {policy: fake, judge: fake}\n"
        "stages:\n  critique:\n    prompts: red-team\n    limit: 4\n    batch_size: 2\n"
    )
    ref, out = tmp_path / "ref", tmp_path / "o"
    assert invoke("run", str(recipe), "--out", str(ref), "--quiet", "--no-report").code == 0
    with monkeypatch.context() as m:
        _enospc_on_write(m, n, torn=True)
        r = invoke("run", str(recipe), "--out", str(out), "--quiet", "--no-report")
    assert r.code == 2, r.stderr
    assert "cannot write: No space left on device" in one_line(r.stderr)
    assert invoke("run", str(recipe), "--out", str(out), "--quiet", "--no-report").code == 0
    assert comparable(out / "critique") == comparable(ref / "critique")

"""Bad inputs the YAML corpus cannot express: a live, hostile endpoint on 127.0.0.1 and symbolic
links. Same contract as `test_bad_inputs` (exit code 2, one stderr line with the expected text,
no traceback, nothing outside the output folder touched), and for endpoints the failed records
keep their one-line error.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Result, invoke
from tests.servers import Reply, ScriptedServer, completion

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bad_inputs"
PROMPTS = str(FIXTURES / "prompts_ok.jsonl")
PAIRS = str(FIXTURES / "pairs_ok.jsonl")


def one_line(r: Result, expect: str) -> None:
    assert "Traceback" not in r.stdout + r.stderr
    assert r.code == 2, f"exit {r.code}; stderr: {r.stderr!r}"
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {r.stderr!r}"
    assert expect in lines[0], f"{expect!r} not in {lines[0]!r}"


def snapshot(root: Path, skip: Path | None = None) -> dict[str, Any]:
    """Every entry under root: a link as its target, a file as its bytes, a folder as None."""
    seen: dict[str, Any] = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        key = str(p.relative_to(root))
        if p.is_symlink():
            seen[key] = ("link", os.readlink(p))
        else:
            seen[key] = p.read_bytes() if p.is_file() else None
    return seen


# ---- hostile endpoints ---------------------------------------------------------------------


def _answer(mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    body = completion("(A)", top_logprobs=[("A", -0.1), ("B", -2.5)])
    mutate(body)
    return body


def _choice(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda b: b["choices"][0].__setitem__(key, value)


def _message(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda b: b["choices"][0]["message"].__setitem__(key, value)


def _top(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda b: b["choices"][0]["logprobs"]["content"][0]["top_logprobs"][0].__setitem__(key, value)


def _first(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda b: b["choices"][0]["logprobs"]["content"][0].__setitem__(key, value)


@dataclass(frozen=True)
class Endpoint:
    id: str
    command: str  # "critique" (generation) or "label" (option probabilities)
    reply: Reply
    expect: str  # in the record's error (critique: also in the stderr line)


ENDPOINTS = [
    Endpoint("message-null", "critique", Reply(body=_answer(_choice("message", None))), "message is NoneType"),
    Endpoint("message-string", "critique", Reply(body=_answer(_choice("message", "hi"))), "message is str"),
    Endpoint("content-number", "critique", Reply(body=_answer(_message("content", 42))), "content is int, not text"),
    Endpoint("content-list", "critique", Reply(body=_answer(_message("content", ["a"]))), "content is list"),
    Endpoint("content-object", "critique", Reply(body=_answer(_message("content", {"a": 1}))), "content is"),
    Endpoint("choices-empty", "critique", Reply(body=_answer(lambda b: b.__setitem__("choices", []))), "no choices"),
    Endpoint("choices-string", "critique", Reply(body=_answer(lambda b: b.__setitem__("choices", "x"))), "no choices"),
    Endpoint("usage-string", "critique", Reply(body=_answer(lambda b: b.__setitem__("usage", "lots"))), "usage is str"),
    Endpoint("usage-number", "critique", Reply(body=_answer(lambda b: b.__setitem__("usage", 12))), "usage is int"),
    Endpoint(
        "usage-tokens-negative",
        "critique",
        Reply(body=_answer(lambda b: b["usage"].__setitem__("completion_tokens", -3))),
        "completion_tokens is -3",
    ),
    Endpoint(
        "usage-tokens-text",
        "critique",
        Reply(body=_answer(lambda b: b["usage"].__setitem__("completion_tokens", "many"))),
        "completion_tokens is 'many'",
    ),
    Endpoint("body-not-json", "critique", Reply(kind="raw", text="<html>busy</html>"), "malformed response"),
    Endpoint("body-array", "critique", Reply(body=[1, 2]), "malformed response"),
    Endpoint("logprob-null", "label", Reply(body=_answer(_first("logprob", None))), "logprob is NoneType"),
    Endpoint("logprob-text", "label", Reply(body=_answer(_first("logprob", "abc"))), "logprob is str"),
    Endpoint("logprob-positive", "label", Reply(body=_answer(_top("logprob", 168.5))), "logprob is 168.5"),
    Endpoint("logprob-small-positive", "label", Reply(body=_answer(_top("logprob", 0.25))), "at most 0"),
    Endpoint("logprob-nan", "label", Reply(kind="raw", text=json.dumps(_answer(_top("logprob", float("nan"))))), "nan"),
    Endpoint("logprob-inf", "label", Reply(kind="raw", text=json.dumps(_answer(_top("logprob", float("inf"))))), "inf"),
    Endpoint("logprob-true", "label", Reply(body=_answer(_top("logprob", True))), "at most 0"),
    Endpoint("token-number", "label", Reply(body=_answer(_top("token", 7))), "token is not a string"),
    Endpoint("top-string", "label", Reply(body=_answer(_first("top_logprobs", "A"))), "top_logprobs is not a list"),
    Endpoint(
        "logprobs-content-string",
        "label",
        Reply(body=_answer(lambda b: b["choices"][0]["logprobs"].__setitem__("content", "A"))),
        "content is not a list",
    ),
    Endpoint("drip", "critique", Reply(kind="drip", seconds=0.3, body=completion("slow " * 50)), "request deadline"),
    Endpoint("drip-judge", "label", Reply(kind="drip", seconds=0.3, body=completion("(A)")), "request deadline"),
    Endpoint("hang", "critique", Reply(kind="hang", seconds=600.0, body=completion("late")), "request deadline"),
]


def _endpoint_argv(e: Endpoint, server: ScriptedServer, out: Path) -> list[str]:
    common = ["--base-url", server.base_url, "--max-retries", "0", "--request-deadline", "1.5", "--out", str(out)]
    if e.command == "critique":
        return ["critique", "--model", "openai:s", "--prompts", PROMPTS, "--limit", "1", "--rounds", "1", *common]
    return ["label", "--judge", "openai:s", "--pairs", PAIRS, *common]


@pytest.mark.parametrize("e", ENDPOINTS, ids=[e.id for e in ENDPOINTS])
def test_hostile_endpoint(e: Endpoint, tmp_path: Path, scripted_server: ScriptedServer) -> None:
    scripted_server.script = [e.reply]
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    r = invoke(*_endpoint_argv(e, scripted_server, out), "--quiet")
    one_line(r, "records.jsonl")
    assert scripted_server.attempts >= 1
    records = (out / "records.jsonl").read_text()
    assert e.expect in records, records[:2000]
    if e.command == "critique":  # the failed record keeps its error, and the line quotes it
        assert e.expect in r.stderr
        assert all(json.loads(line)["error"] for line in records.splitlines())
    assert snapshot(tmp_path, skip=out) == before
    if e.reply.kind == "drip":  # cut off by the deadline: most of the body was never sent
        assert scripted_server.dripped < len(json.dumps(e.reply.body))


def test_bad_openai_base_url_in_the_environment(tmp_path: Path) -> None:
    r = invoke(
        "critique", "--model", "openai:m", "--prompts", PROMPTS, "--out", str(tmp_path / "out"),
        env={"OPENAI_BASE_URL": "http://127.0.0.1:123456/v1"},
    )  # fmt: skip
    one_line(r, "OPENAI_BASE_URL: 'http://127.0.0.1:123456/v1': not a usable URL")
    assert list(tmp_path.iterdir()) == []


# ---- symbolic links and files cai does not own ----------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished critique run and a finished label run (fake model), copied by each case."""
    root = tmp_path_factory.mktemp("hostile-base")
    runs = {
        "critique": ["critique", "--model", "fake", "--prompts", PROMPTS, "--limit", "2"],
        "label": ["label", "--judge", "fake", "--pairs", PAIRS],
    }
    for name, argv in runs.items():
        r = invoke(*argv, "--out", str(root / name), "--quiet")
        assert r.code == 0, r.stderr
    return {k: root / k for k in runs}


def _link(tmp: Path, name: str, target: str = "target.txt") -> None:
    p = tmp / "out" / name
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()
    p.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(tmp / target, p)


def lk(name: str, target: str = "target.txt") -> Callable[[Path], None]:
    """Set-up: OUT/name becomes a link to {tmp}/target."""
    return lambda t: _link(t, name, target)


def _hard_link(tmp: Path, name: str) -> None:
    p = tmp / "out" / name
    p.unlink()
    os.link(tmp / "target.txt", p)


@dataclass(frozen=True)
class Linked:
    id: str
    base: str | None  # a finished run copied to {tmp}/out first
    setup: Callable[[Path], None]
    argv: str
    expect: str


CRITIQUE = "critique --model fake --out {out} --prompts " + PROMPTS + " --limit 2 --quiet"
LABEL = "label --judge fake --out {out} --pairs " + PAIRS + " --quiet"
RUN = "run " + str(FIXTURES / "recipe_ok.yaml") + " --out {out} --no-report --quiet"
LINK = ": --out: is a symbolic link"
LINKED = [
    Linked("records-link", "critique", lk("records.jsonl"), CRITIQUE, "records.jsonl" + LINK),
    Linked("lock-link", "critique", lk(".cai.lock"), CRITIQUE, ".cai.lock" + LINK),
    Linked("manifest-link", "critique", lk("run.json"), CRITIQUE, "run.json" + LINK),
    Linked("export-link", "critique", lk("sft.jsonl"), CRITIQUE, "sft.jsonl" + LINK),
    Linked("summary-link", "critique", lk("summary.json"), CRITIQUE, "summary.json" + LINK),
    Linked("dataset-link", "critique", lk("dataset", "elsewhere"), CRITIQUE, "dataset" + LINK),
    Linked("dangling-records-link", "critique", lk("records.jsonl", "nothere"), CRITIQUE, "records.jsonl" + LINK),
    Linked("label-records-link", "label", lk("records.jsonl"), LABEL, "records.jsonl" + LINK),
    Linked("label-lock-link", "label", lk(".cai.lock"), LABEL, ".cai.lock" + LINK),
    Linked("label-export-link", "label", lk("preferences.jsonl"), LABEL, "preferences.jsonl" + LINK),
    Linked("lock-hard-link", "critique", lambda t: _hard_link(t, ".cai.lock"), CRITIQUE, "not a plain file of its own"),
    Linked("run-log-link", None, lk("log.txt"), RUN, "log.txt" + LINK),
    Linked("run-recipe-link", None, lk("recipe.json"), RUN, "recipe.json" + LINK),
    Linked(
        "run-stage-records-link",
        None,
        lambda t: ((t / "out" / "critique").mkdir(parents=True), _link(t, "critique/records.jsonl")),
        RUN,
        "critique/records.jsonl" + LINK,
    ),
    Linked(
        "fresh-out-records-link",
        None,
        lambda t: ((t / "out").mkdir(), _link(t, "records.jsonl")),
        CRITIQUE,
        "records.jsonl: --out: is a symbolic link",
    ),
    Linked(
        "prompts-link-into-out",
        "critique",
        lambda t: os.symlink(t / "out" / "records.jsonl", t / "prompts.jsonl"),
        "critique --model fake --out {out} --prompts {tmp}/prompts.jsonl --quiet",
        "--prompts: lives inside the output folder",
    ),
    Linked(
        "merge-out-records-link",
        None,
        lambda t: ((t / "out").mkdir(), _link(t, "records.jsonl")),
        "merge {base}/s0 {base}/s1 --out {out}",
        "records.jsonl: --out: is a symbolic link",
    ),
    Linked(
        "template-link-outside",
        None,
        lambda t: ((t / "mine").mkdir(), os.symlink(t / "elsewhere" / "x.jinja", t / "mine" / "x.jinja")),
        "render x --templates {tmp}/mine",
        "links outside its template folder",
    ),
]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile-shards")
    for i in (0, 1):
        argv = ["critique", "--model", "fake", "--prompts", PROMPTS, "--batch-size", "1", "--shard", f"{i}/2"]
        r = invoke(*argv, "--out", str(root / f"s{i}"), "--quiet")
        assert r.code == 0, r.stderr
    return root


@pytest.mark.parametrize("case", LINKED, ids=[c.id for c in LINKED])
def test_no_writes_through_links(case: Linked, tmp_path: Path, finished: dict[str, Path], shards: Path) -> None:
    (tmp_path / "target.txt").write_text("not cai's file\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.jinja").write_text("outside\n")
    if case.base:
        shutil.copytree(finished[case.base], tmp_path / "out", symlinks=True)
    case.setup(tmp_path)
    before = snapshot(tmp_path)
    argv = case.argv.format(out=tmp_path / "out", tmp=tmp_path, base=shards).split()
    r = invoke(*argv)
    one_line(r, case.expect)
    assert snapshot(tmp_path) == before
    assert (tmp_path / "target.txt").read_text() == "not cai's file\n"


# ---- the deadline holds before the headers, too ----------------------------------------------


def test_a_server_dripping_its_headers_is_cut_off_at_the_deadline() -> None:
    """The budget is enforced at the socket: a server that sends its status line and headers one
    byte at a time (each gap far below the read timeout) stops being read once the request's
    budget is spent. Counted in bytes sent, not in seconds."""
    import socket
    import threading

    import httpx2

    from cai.models.deadline import DeadlineTransport

    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: "
        + b"a" * 300
        + b"\r\nContent-Length: 2\r\n\r\n{}"
    )
    sent: list[int] = []
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        try:
            for b in head:
                if stop.is_set():
                    break
                conn.sendall(bytes([b]))
                sent.append(b)
                stop.wait(0.02)
        except OSError:
            pass  # the client hung up: what the deadline is for
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = httpx2.Client(transport=DeadlineTransport(0.5), timeout=5.0)
    with pytest.raises(httpx2.TimeoutException):
        client.get(f"http://127.0.0.1:{srv.getsockname()[1]}/")
    stop.set()
    thread.join(timeout=10)
    srv.close()
    assert len(sent) < len(head)  # cut off while the headers were still arriving (however busy the machine)


def test_the_deadline_transport_uses_the_proxy_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """A transport given to the client replaces the one httpx builds from the environment, so it
    must honour HTTPS_PROXY and NO_PROXY itself."""
    from cai.models.deadline import env_proxy

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert env_proxy("https://api.example.com/v1") == "http://proxy.internal:3128"
    assert env_proxy("http://127.0.0.1:8080/v1") is None

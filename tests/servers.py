"""Servers the tests start themselves: the real llama.cpp server, and a scripted faulty one.

`LlamaServer` runs ``python -m llama_cpp.server`` on the embedded GGUF (its own chat template,
the same one transformers uses) on 127.0.0.1 and a free port.

`ScriptedServer` is a tiny OpenAI-lookalike whose answer to each successive request is
scripted by the test: an HTTP error with headers, a hang past the client's timeout, a
malformed body, or a valid chat completion. It records every request so tests can count
attempts and check what was sent.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the real llama.cpp server ------------------------------------------------------------


class LlamaServer:
    def __init__(
        self, gguf: Path, log_path: Path, *, n_ctx: int = 2048, n_threads: int | None = None
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(n_ctx),
            # The default is half the cores; serving alone, it should use them all (and the
            # same number for prompt processing, so a thread limit applies to both).
            "--n_threads",
            str(n_threads or os.cpu_count() or 1),
            "--n_threads_batch",
            str(n_threads or os.cpu_count() or 1),
        ]
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"llama.cpp server not ready after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


@contextlib.contextmanager
def llama_server(gguf: Path, log_dir: Path, *, n_threads: int | None = None) -> Iterator[str]:
    server = LlamaServer(gguf, log_dir / "llama_server.log", n_threads=n_threads)
    try:
        server.wait_ready()
        yield server.base_url
    finally:
        server.stop()


# ---- the scripted faulty endpoint ---------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``kind``: "json" (send ``body``), "raw" (send ``text`` as is),
    "hang" (sleep ``seconds`` before answering with ``body``), "echo" (a completion whose
    content is the request's last message, so tests can check ordering), "drip" (``body`` one
    byte every ``seconds``: each read is quick, the whole answer never ends in time)."""

    status: int = 200
    kind: str = "json"
    body: Any = None
    text: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def completion(
    content: str = "ok",
    *,
    n: int = 1,
    top_logprobs: list[tuple[str, float]] | None = None,
    completion_tokens: int = 3,
) -> dict[str, Any]:
    """A minimal valid /v1/chat/completions body."""
    logprobs = None
    if top_logprobs is not None:
        tok, lp = top_logprobs[0]
        logprobs = {
            "content": [
                {
                    "token": tok,
                    "logprob": lp,
                    "bytes": None,
                    "top_logprobs": [
                        {"token": t, "logprob": p, "bytes": None} for t, p in top_logprobs
                    ],
                }
            ]
        }
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop",
            "logprobs": logprobs,
        }
        for i in range(n)
    ]
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "scripted",
        "choices": choices,
        "usage": {"prompt_tokens": 5, "completion_tokens": completion_tokens, "total_tokens": 8},
    }


def error_body(status: int, message: str = "scripted failure") -> dict[str, Any]:
    return {"error": {"message": message, "type": "server_error", "code": status}}


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: Any


class ScriptedServer:
    """Serves ``script`` in order, repeating the last reply once the script runs out."""

    def __init__(self) -> None:
        self.script: list[Reply] = [Reply(body=completion())]
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._release = threading.Event()  # wakes hanging handlers at shutdown
        self.dripped = 0  # body bytes sent by "drip" replies, all requests together
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                self._send(Reply(body={"object": "list", "data": [{"id": "scripted"}]}))

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = raw.decode(errors="replace")
                with outer._lock:
                    index = len(outer.requests)
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    outer.requests.append(Seen(self.path, headers, body))
                    reply = outer.script[min(index, len(outer.script) - 1)]
                if reply.kind == "hang":
                    outer._release.wait(reply.seconds)
                if reply.kind == "echo":
                    reply = Reply(body=completion(body["messages"][-1]["content"]))
                if reply.kind == "drip":
                    self._drip(reply)
                    return
                self._send(reply)

            def _drip(self, reply: Reply) -> None:
                payload = json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.flush()
                    for k in range(len(payload)):
                        if outer._release.wait(reply.seconds):
                            return
                        self.wfile.write(payload[k : k + 1])
                        self.wfile.flush()
                        with outer._lock:
                            outer.dripped += 1
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up: its deadline passed

            def _send(self, reply: Reply) -> None:
                payload = reply.text.encode() if reply.kind == "raw" else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout); that is the point of a hang

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def attempts(self) -> int:
        return len(self.requests)

    def start(self) -> ScriptedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

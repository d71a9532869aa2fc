"""A whole-request deadline for API calls.

The HTTP client's timeouts bound each *read*: a server that sends one byte every two seconds
never trips a 60 s read timeout and can hold a run for ever. `DeadlineTransport` gives every
request one budget for everything it does: connecting, sending, waiting for the headers and
each read of the body. The budget is enforced at the socket: every connect, read and write of
the request's connection waits at most what is left of it (`_Budget`, per thread, since a
request runs start to end in its caller's thread), so a server that drips its headers is cut
off as surely as one that drips its body. Running out raises the client's own timeout error, so
the backend treats it exactly like a timeout (retried, then recorded as the record's error).

A transport given to the client replaces the one httpx would build from the environment, so
this one is built the same way: the proxy the environment names for the endpoint
(``HTTPS_PROXY``, ``NO_PROXY``, …) and the openai client's connection limits.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

import httpcore2
import httpx2


class _Budget(threading.local):
    """The deadline of the request this thread is sending (None outside one)."""

    deadline: float | None = None

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock

    def cap(self, timeout: float | None) -> float | None:
        """`timeout`, no longer than what is left of the request's budget."""
        if self.deadline is None:
            return timeout
        left = self.deadline - self.clock()
        if left <= 0:
            raise httpcore2.ReadTimeout("request deadline passed")
        return left if timeout is None else min(timeout, left)


class _Stream(httpcore2.NetworkStream):
    """A connection whose every read and write waits at most what the budget has left."""

    def __init__(self, inner: httpcore2.NetworkStream, budget: _Budget) -> None:
        self._inner, self._budget = inner, budget

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._budget.cap(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._budget.cap(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        tls = self._inner.start_tls(ssl_context, server_hostname, self._budget.cap(timeout))
        return _Stream(tls, self._budget)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore2.NetworkBackend):
    def __init__(self, inner: Any, budget: _Budget) -> None:
        self._inner, self._budget = inner, budget

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        stream = self._inner.connect_tcp(host, port, self._budget.cap(timeout), local_address, socket_options)
        return _Stream(stream, self._budget)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, self._budget.cap(timeout), socket_options), self._budget)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (None when there is none or NO_PROXY exempts it)."""
    parts = httpx2.URL(url)
    if urllib.request.proxy_bypass(parts.host):
        return None
    return urllib.request.getproxies().get(parts.scheme)


class DeadlineTransport(httpx2.BaseTransport):
    """A transport whose requests, headers and body included, each end within ``seconds``."""

    def __init__(
        self,
        seconds: float,
        base_url: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        limits: httpx2.Limits | None = None,
    ) -> None:
        self.seconds = seconds
        self._budget = _Budget(clock)
        proxy = env_proxy(base_url) if base_url else None
        self._inner = httpx2.HTTPTransport(proxy=proxy, limits=limits or httpx2.Limits())
        pool = self._inner._pool  # the transport builds its pool; its sockets are opened through this backend
        pool._network_backend = _Backend(pool._network_backend, self._budget)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        clock = self._budget.clock
        deadline = clock() + self.seconds
        self._budget.deadline = deadline
        try:
            response = self._inner.handle_request(request)
            response.read()  # the whole body inside the budget (API replies are small)
        except httpx2.TimeoutException as e:
            if clock() < deadline:
                raise  # a phase's own timeout, before the budget ran out
            raise httpx2.ReadTimeout(f"request deadline passed ({self.seconds:g}s)", request=request) from e
        finally:
            self._budget.deadline = None
        return response

    def close(self) -> None:
        self._inner.close()

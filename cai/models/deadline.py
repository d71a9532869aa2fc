"""A whole-request deadline for API calls.

The HTTP client's timeouts bound each *read*: a server that sends one byte every two seconds
never trips a 60 s read timeout and can hold a run for ever. `DeadlineTransport` gives every
request one budget for everything it does (connecting, sending, each read of the body): every
per-phase timeout is capped at what is left of it, and the body is read through a wrapper that
stops as soon as the budget is spent. Running out raises the client's own read-timeout error, so
the backend treats it exactly like a timeout (retried, then recorded as the record's error).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx2


class _DeadlineStream(httpx2.SyncByteStream):
    """The response body, cut off with `ReadTimeout` once the deadline has passed."""

    def __init__(self, inner: Any, deadline: float, clock: Callable[[], float], request: httpx2.Request) -> None:
        self._inner = inner
        self._deadline = deadline
        self._clock = clock
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            if self._clock() > self._deadline:
                raise httpx2.ReadTimeout("request deadline passed while reading the body", request=self._request)
            yield chunk

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class DeadlineTransport(httpx2.BaseTransport):
    """Wraps a transport so that each request, body included, ends within ``seconds``."""

    def __init__(
        self, seconds: float, inner: httpx2.BaseTransport | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = seconds
        self._inner = inner or httpx2.HTTPTransport()
        self._clock = clock

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        deadline = self._clock() + self.seconds
        timeouts = dict(request.extensions.get("timeout") or {})
        for phase in ("connect", "read", "write", "pool"):
            given = timeouts.get(phase)
            timeouts[phase] = self.seconds if given is None else min(float(given), self.seconds)
        request.extensions = {**request.extensions, "timeout": timeouts}
        response = self._inner.handle_request(request)
        response.stream = _DeadlineStream(response.stream, deadline, self._clock, request)
        return response

    def close(self) -> None:
        self._inner.close()

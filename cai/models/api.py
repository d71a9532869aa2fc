"""`ApiBackend`: any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp, Ollama).

Retries are our own loop, not the client's ``max_retries`` (the client is built with
``max_retries=0``): we need the attempt count and backoff to be explicit and testable, a
malformed body to count as retryable, and the final failure to become a value
(`Generation.error` / `OptionScores.error`) rather than an exception that loses a batch.

A conversation ending with an assistant message is sent as it is; how the server renders it
is the server's business (llama.cpp closes the turn and opens a new assistant turn).
"""

from __future__ import annotations

import email.utils
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from cai.models.api_checks import response_problem
from cai.models.base import Conversation, Generation, GenerationParams, OptionScores, SequenceScore
from cai.models.options import match_logprobs, parse_option, truncate_at_stop
from cai.redact import contains_secret, known_secrets, redact, redact_text

T = TypeVar("T")
# The error of a record whose answer repeats a key this backend was given (its text is dropped).
SECRET_IN_ANSWER = "the endpoint's answer contains a secret (the API key or URL credentials); text dropped"
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` retries after the first attempt; delays double from ``backoff_base``
    up to ``backoff_max``, with full jitter in [50 %, 100 %]; a server's Retry-After wins
    (capped at ``retry_after_max`` so a hostile header cannot stall a run for hours)."""

    max_retries: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 20.0
    retry_after_max: float = 120.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_max)
        raw = min(self.backoff_max, self.backoff_base * (2**attempt))
        return raw * (0.5 + 0.5 * rng.random())


class _Retryable(Exception):
    """A failure worth another attempt, carrying the server's Retry-After if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (either delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def public_url(url: str) -> str:
    """The endpoint without credentials or query (both may carry secrets)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class ApiBackend:
    """An OpenAI-compatible endpoint behind the `Backend` protocol."""

    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        base_url: str | None = None,
        spec: str | None = None,
        concurrency: int = 8,
        timeout: float = 60.0,
        deadline: float | None = None,
        retry: RetryPolicy | None = None,
        top_logprobs: int = 20,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import openai

        from cai.models.deadline import DeadlineTransport

        self.model = model
        self.spec = spec or f"openai:{model}"
        self.concurrency = max(1, concurrency)
        self.timeout = timeout
        # One budget for a whole request, body included: the client's timeout bounds each read only.
        self.deadline = deadline if deadline is not None else 5 * timeout
        self.retry = retry or RetryPolicy()
        self.top_logprobs = top_logprobs
        self._sleep = sleep
        self._rng = random.Random()  # jitter only; never affects outputs
        # What the server could echo back (the key, the URL's credentials): scrubbed from every
        # error, text and description this backend returns, since all of it ends up in records.
        self._secrets = known_secrets(urls=[base_url]) | ({api_key} if api_key else set())
        limits = getattr(openai, "DEFAULT_CONNECTION_LIMITS", None)
        http = openai.DefaultHttpxClient(transport=DeadlineTransport(self.deadline, base_url, limits=limits))
        self._client = openai.OpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0, http_client=http
        )
        self._openai = openai

    # ---- plumbing -------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return redact_text(text, self._secrets)

    def _clean(self, texts: list[str]) -> list[str]:
        """Answers are data: never rewritten. Ones holding a secret are dropped instead."""
        return [t for t in texts if not contains_secret(t, self._secrets)]

    def _scrub_scores(self, score: OptionScores) -> OptionScores:
        """A judge's answer (its raw text or tokens) is data too: one holding a secret fails."""
        if score.raw is not None and contains_secret(score.raw, self._secrets):
            return OptionScores.failed(SECRET_IN_ANSWER)
        score.error = None if score.error is None else self._scrub(score.error)
        return score

    def _classify(self, exc: Exception) -> Exception:
        """Map client errors to `_Retryable` or leave them final."""
        openai = self._openai
        if isinstance(exc, openai.APIStatusError):
            retry_after = None
            headers = getattr(exc.response, "headers", None)
            if headers is not None:
                ms = headers.get("retry-after-ms")
                retry_after = float(ms) / 1000 if ms and ms.replace(".", "", 1).isdigit() else None
                retry_after = retry_after or parse_retry_after(headers.get("retry-after"))
            if exc.status_code in RETRYABLE_STATUS or exc.status_code >= 500:
                return _Retryable(f"HTTP {exc.status_code}: {exc.message}", retry_after)
            return exc
        if isinstance(exc, openai.APITimeoutError):
            if "deadline" in str(exc.__cause__ or ""):
                return _Retryable(f"no complete answer within the request deadline ({self.deadline:g} s)")
            return _Retryable(f"timed out after {self.timeout:g} s")
        if isinstance(exc, openai.APIConnectionError):
            return _Retryable(f"connection error: {exc}")
        if isinstance(exc, ValueError | openai.APIResponseValidationError | AttributeError):
            return _Retryable(f"malformed response: {type(exc).__name__}: {exc}")
        return exc

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` with retries; raise `RuntimeError` with a scrubbed message at the end."""
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                err = self._classify(exc)
                attempts = attempt + 1
                if not isinstance(err, _Retryable):
                    raise RuntimeError(self._scrub(f"{type(exc).__name__}: {exc} (attempts: {attempts})")) from None
                if attempt >= self.retry.max_retries:
                    raise RuntimeError(self._scrub(f"gave up after {attempts} attempts: {err}")) from None
                self._sleep(self.retry.delay(attempt, err.retry_after, self._rng))
                attempt += 1

    def _chat(self, messages: Conversation, **kwargs: Any) -> Any:
        def once() -> Any:
            resp = self._client.chat.completions.create(
                model=self.model, messages=list(messages), timeout=self.timeout, **kwargs
            )
            problem = response_problem(resp)
            if problem:
                raise ValueError(problem)
            return resp

        return self._call(once)

    def _map(self, fn: Callable[[Conversation], T], items: Sequence[Conversation]) -> list[T]:
        if len(items) <= 1:
            return [fn(c) for c in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))  # map keeps input order

    # ---- generation -----------------------------------------------------------------------

    def generate(
        self,
        conversations: Sequence[Conversation],
        params: GenerationParams,
        *,
        min_new_tokens: int = 0,
    ) -> list[Generation]:
        """See `Backend.generate`. ``min_new_tokens`` (benchmarks) is sent as ``min_tokens``
        (llama-cpp-python, vLLM); when it covers every token, also as ``ignore_eos``, the only
        form llama.cpp's own `llama-server` honours (it drops ``min_tokens`` silently). Other
        servers may reject either."""

        def one(conv: Conversation) -> Generation:
            texts: list[str] = []
            tokens = 0
            try:
                # Servers that ignore `n` (llama.cpp) return one choice: ask again, with a
                # shifted seed so the extra samples differ.
                while len(texts) < params.n:
                    want = params.n - len(texts)
                    kwargs: dict[str, Any] = {
                        "max_tokens": params.max_new_tokens,
                        "temperature": params.temperature,
                        "top_p": params.top_p,
                        "seed": params.seed + len(texts),
                    }
                    if want > 1:
                        kwargs["n"] = want
                    if params.stop:
                        kwargs["stop"] = list(params.stop)[:4]  # the API's limit
                    if min_new_tokens:
                        extra: dict[str, Any] = {"min_tokens": min_new_tokens}
                        if min_new_tokens >= params.max_new_tokens:
                            extra["ignore_eos"] = True
                        kwargs["extra_body"] = extra
                    resp = self._chat(conv, **kwargs)
                    for choice in resp.choices[:want]:
                        texts.append(truncate_at_stop(choice.message.content or "", params.stop))
                    usage = getattr(resp, "usage", None)
                    tokens += int(getattr(usage, "completion_tokens", 0) or 0)
            except RuntimeError as exc:
                return Generation(texts=self._clean(texts), n_tokens=tokens, error=self._scrub(str(exc)))
            clean = self._clean(texts)  # only the samples holding a secret are dropped
            if len(clean) < len(texts):
                return Generation(texts=clean, n_tokens=tokens, error=SECRET_IN_ANSWER)
            return Generation(texts=texts, n_tokens=tokens)

        return self._map(one, conversations)

    # ---- option probabilities -------------------------------------------------------------

    def option_probs(self, conversations: Sequence[Conversation], options: Sequence[str]) -> list[OptionScores]:
        """Answer-token ``top_logprobs`` when the endpoint gives them, else parse a short
        sampled answer (``path="text"``, probability 1 on the parsed option)."""
        if not options:
            return [OptionScores.failed("no options given") for _ in conversations]

        def one(conv: Conversation) -> OptionScores:
            try:
                resp = self._chat(
                    conv,
                    max_tokens=1,
                    temperature=0.0,
                    logprobs=True,
                    top_logprobs=self.top_logprobs,
                )
                top = _top_logprobs(resp)
                if top is not None:
                    return self._scrub_scores(match_logprobs(top, options, raw=json.dumps(top)))
                resp = self._chat(conv, max_tokens=16, temperature=0.0)
                text = resp.choices[0].message.content or ""
                return self._scrub_scores(parse_option(text, options))
            except RuntimeError as exc:
                return OptionScores.failed(self._scrub(str(exc)))

        return self._map(one, conversations)

    # ---- sequence log-probabilities --------------------------------------------------------

    def sequence_logprobs(self, requests: Sequence[tuple[Conversation, str]]) -> list[SequenceScore]:
        """Not available: chat-completions endpoints return log-probabilities of the tokens they
        *generate*, never of a reply they are given (prompt log-probabilities would need the
        legacy completions endpoint with ``echo`` plus the model's chat template on this side,
        which an OpenAI-compatible server does not expose). Stop before any work is recorded."""
        from cai.errors import option_error

        raise option_error(
            "--method",
            "this OpenAI-compatible endpoint cannot score given replies (no prompt log-probabilities); "
            "use a local judge (embedded, a model folder) for likelihood contrast",
            value=self.spec,
        )

    # ---- provenance -----------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return redact(
            {
                "spec": self.spec,
                "backend": "openai",
                "model": self.model,
                "base_url": public_url(str(self._client.base_url)),
                "concurrency": self.concurrency,
                "timeout": self.timeout,
                "deadline": self.deadline,
                "max_retries": self.retry.max_retries,
            },
            self._secrets,
        )

    def close(self) -> None:
        self._client.close()


def _top_logprobs(resp: Any) -> list[tuple[str, float]] | None:
    """(token, logprob) pairs of the first answer token, or None if the server gave none."""
    logprobs = getattr(resp.choices[0], "logprobs", None)
    content = getattr(logprobs, "content", None) if logprobs is not None else None
    if not content:
        return None
    first = content[0]
    pairs = [(t.token, float(t.logprob)) for t in (first.top_logprobs or [])]
    if not pairs:
        pairs = [(first.token, float(first.logprob))]
    return pairs

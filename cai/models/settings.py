"""How a model spec is opened: one settings model for every command's backend options and for the
recipe's `models` section (`cai.run.sections.Models` adds the policy and judge specs), and the one
place a spec becomes a backend."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from pydantic import Field, field_validator

from cai.errors import option_error
from cai.settings import Strict

# The model spec every command and recipe uses unless told otherwise.
DEFAULT_MODEL = "embedded"


class BackendSettings(Strict):
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint (default: OPENAI_BASE_URL).")
    api_key_env: str | None = Field(
        None, description="Name of the env var holding the API key (default: OPENAI_API_KEY)."
    )
    # Plain strings: dtype aliases (float32, bfloat16 …) and devices such as cuda:1 are resolved by
    # `cai.models.device`, which names what it accepts.
    dtype: str = Field("auto", description="auto, fp32, bf16 or fp16 (local models).")
    device: str = Field("auto", description="auto, cpu or cuda (local models).")
    concurrency: int = Field(8, ge=1, description="Parallel requests to an API endpoint.")
    request_deadline: float = Field(
        300.0,
        gt=0,
        le=86400,
        allow_inf_nan=False,
        description="Seconds one API request may take in all (connect, send, every read); "
        "a server that answers too slowly fails the attempt like a timeout.",
    )
    max_retries: int = Field(4, ge=0, le=20, description="Retries of a failed API request (429, 5xx, timeouts).")

    # How (and how many at once) an endpoint is asked, not what: a stage's key leaves these out,
    # so raising a deadline to get past a slow server does not redo finished stages.
    PATIENCE: ClassVar[tuple[str, ...]] = ("concurrency", "request_deadline", "max_retries")

    @field_validator("base_url")
    @classmethod
    def _usable_url(cls, v: str | None) -> str | None:
        from cai.models.api_checks import base_url_problem

        problem = None if v is None else base_url_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, v: str) -> str:
        from cai.models.device import normalise_dtype

        normalise_dtype(v)  # its ValueError names what it accepts
        return v

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if not DEVICE_RE.fullmatch(v.strip().lower()):
            raise ValueError(f"unknown device {v!r}; choose one of auto, cpu, cuda, cuda:N, mps")
        return v


# What torch accepts as a device here: `cai.models.device.choose_device` passes it on as given.
DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@contextmanager
def _no_loading_bar(quiet: bool) -> Iterator[None]:
    """Under --quiet, hide transformers' "Loading weights" bar while a model loads (its warnings
    still show), then restore the bar setting."""
    if not quiet:
        yield
        return
    from transformers.utils import logging as tf_logging

    was_enabled = tf_logging.is_progress_bar_enabled()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            tf_logging.enable_progress_bar()


def open_backend(
    spec: str, backend: BackendSettings | None = None, *, quiet: bool = False, named_by: str = "--model"
) -> Any:
    """A backend for `spec`; a spec that names nothing usable is a one-line error naming the
    option (or recipe key) `named_by` that gave it."""
    from cai.models.base import ModelSpecError
    from cai.models.spec import load_backend

    b = backend or BackendSettings()
    try:
        with _no_loading_bar(quiet):
            return load_backend(
                spec,
                base_url=b.base_url,
                api_key_env=b.api_key_env,
                dtype=b.dtype,
                device=b.device,
                concurrency=b.concurrency,
                deadline=b.request_deadline,
                max_retries=b.max_retries,
            )
    except ModelSpecError as e:
        raise option_error(named_by, str(e), value=spec) from None


class Backends:
    """Open each distinct spec once (a model that is both policy and judge loads once) and close
    them all on exit."""

    def __init__(self, settings: BackendSettings | None = None, *, quiet: bool = False) -> None:
        self.settings = settings or BackendSettings()
        self.quiet = quiet
        self.opened: dict[str, Any] = {}

    def __call__(self, spec: str, named_by: str = "--model") -> Any:
        if spec not in self.opened:
            self.opened[spec] = open_backend(spec, self.settings, quiet=self.quiet, named_by=named_by)
        return self.opened[spec]

    def __enter__(self) -> Backends:
        return self

    def __exit__(self, *exc: object) -> None:
        for b in self.opened.values():
            b.close()
        self.opened.clear()

"""Options shared by the stage commands, and the one place a model spec becomes a backend."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from cai.errors import fail

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="Model spec: embedded, a local path/hub id, or openai:<model>.")
]
BaseUrlOpt = Annotated[
    str | None, typer.Option("--base-url", help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL).")
]
KeyEnvOpt = Annotated[
    str | None, typer.Option("--api-key-env", help="Name of the env var holding the API key (default: OPENAI_API_KEY).")
]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto, fp32, bf16 or fp16 (local models).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda (local models).")]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", help="Parallel requests to an API endpoint.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for sampling principles and generation.")]
ShardOpt = Annotated[str | None, typer.Option("--shard", help="i/N: process the i-th of N shards.")]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="Use only the first N prompts.")]


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
    spec: str,
    base_url: str | None = None,
    api_key_env: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    concurrency: int = 8,
    *,
    quiet: bool = False,
):
    from cai.models.spec import ModelSpecError, load_backend

    try:
        with _no_loading_bar(quiet):
            return load_backend(
                spec, base_url=base_url, api_key_env=api_key_env, dtype=dtype, device=device, concurrency=concurrency
            )
    except ModelSpecError as e:
        raise fail("--model", None, spec, str(e)) from None

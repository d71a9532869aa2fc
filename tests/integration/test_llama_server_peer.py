"""The llama-server peer of `benchmarks/generation.py` against the real C++ server, when built.

llama.cpp's own `llama-server` drops the ``min_tokens`` field that llama-cpp-python's server
reads; cai's API path and the benchmark's plain client loop must both still get every requested
token from it (through ``ignore_eos``), or the benchmark would time answers cut short by EOS.
The binary is built by ``benchmarks/_llama_server.py`` (minutes; not part of the test run).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import _llama_server as llama
from benchmarks._peers import SERVED_MODEL, backend_figure, greedy, raw_loop_figure
from cai.models.api import ApiBackend

pytestmark = [pytest.mark.slow, pytest.mark.api]

# Asked for a one-word answer, the embedded model ends with EOS after a few tokens: without
# EOS suppression these requests would stop far short of NEW_TOKENS.
SHORT = [[{"role": "user", "content": f"Answer with one word, yes or no: is {n} even?"}] for n in range(4)]
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def served(embedded_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = llama.find_binary()
    if binary is None:
        pytest.skip("llama-server is not built: run `python benchmarks/_llama_server.py` (minutes)")
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with llama.serve(binary, embedded_gguf, log, parallel=len(SHORT), ctx_per_slot=256) as url:
        yield url


def test_cai_api_and_raw_loop_both_get_every_token(served: str) -> None:
    api = ApiBackend(SERVED_MODEL, api_key="none", base_url=served, concurrency=len(SHORT), timeout=300.0)
    try:
        via_cai = backend_figure(api, SHORT, NEW_TOKENS)
        natural = api.generate(SHORT, greedy(NEW_TOKENS))  # EOS allowed
    finally:
        api.close()
    raw = raw_loop_figure(served, SHORT, NEW_TOKENS, workers=len(SHORT))
    expected = len(SHORT) * NEW_TOKENS
    assert (via_cai.tokens, raw.tokens) == (expected, expected)
    # The prompts really do end early when EOS is allowed: the suppression above did something.
    assert all(g.error is None for g in natural)
    assert sum(g.n_tokens for g in natural) < expected

"""ApiBackend against the real llama.cpp server serving the embedded GGUF (started by a fixture)."""

from __future__ import annotations

import pytest

from cai.models.api import ApiBackend
from cai.models.base import GenerationParams

pytestmark = [pytest.mark.slow, pytest.mark.api]

QUESTION = [
    {"role": "user", "content": "Which of these is a fruit? (A) a car (B) an apple. Answer A or B."}
]
SECRET = "sk-never-logged-9876543210"


@pytest.fixture
def api(llama_base_url: str) -> ApiBackend:
    backend = ApiBackend("embedded-gguf", api_key=SECRET, base_url=llama_base_url,
                         concurrency=2, timeout=60)
    yield backend
    backend.close()


def test_generation(api: ApiBackend) -> None:
    convs = [[{"role": "user", "content": "What is the capital of France?"}],
             [{"role": "user", "content": "Say hello."}]]
    out = api.generate(convs, GenerationParams(max_new_tokens=12, temperature=0.0, n=2))
    assert all(g.error is None and len(g.texts) == 2 and g.texts[0] for g in out), out
    assert all(g.texts[0] == g.texts[1] for g in out)  # greedy: both samples agree
    assert all(0 < g.n_tokens <= 2 * 12 for g in out)


def test_seeded_sampling_repeats(api: ApiBackend) -> None:
    params = GenerationParams(max_new_tokens=10, temperature=1.0, seed=5)
    assert api.generate([QUESTION], params) == api.generate([QUESTION], params)


def test_stop_strings(api: ApiBackend) -> None:
    out = api.generate([[{"role": "user", "content": "Count from 1 to 20, comma separated."}]],
                       GenerationParams(max_new_tokens=40, temperature=0.0, stop=("5",)))
    assert out[0].error is None and "5" not in out[0].texts[0]


def test_option_probs_from_logprobs(api: ApiBackend) -> None:
    scores = api.option_probs([QUESTION, QUESTION], ["A", "B"])
    for s in scores:
        assert s.error is None and s.path == "logprobs"
        assert abs(sum(s.probs.values()) - 1) < 1e-6 and 0 < s.mass <= 1
    assert scores[0] == scores[1]  # greedy scoring is deterministic
    assert SECRET not in repr(api.describe())
    assert api.describe()["base_url"].startswith("http://127.0.0.1:")


def test_load_backend_with_base_url(llama_base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from cai.models.spec import load_backend

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # llama.cpp needs no key
    backend = load_backend("openai:whatever", base_url=llama_base_url)
    try:
        assert backend.generate([QUESTION], GenerationParams(max_new_tokens=4))[0].error is None
    finally:
        backend.close()

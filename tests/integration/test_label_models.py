"""Labels from real models: the embedded judge's labels equal a direct computation from its
logits; the API judge path works against the real llama.cpp server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cai.constitution.load import load_constitution
from cai.constitution.model import Constitution
from cai.io.pairs import Pair, load_pairs
from cai.stages.judge_eval import evaluate_judge
from cai.stages.judging import judge_pairs
from cai.stages.messages import comparison_messages
from cai.stages.settings import JudgeSettings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def c() -> Constitution:
    return load_constitution("harmless")


@pytest.fixture(scope="module")
def hf(embedded_model_dir: Path) -> tuple[Any, Any]:
    """The embedded model loaded by transformers directly, not through cai."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    return tok, model.eval()


def direct_p_first(hf: tuple[Any, Any], conv: list[dict[str, str]]) -> float:
    """P(A) / (P(A) + P(B)) from one unbatched forward pass, with the backend's token rule:
    an option's probability is the sum over its single-token spellings "X" and " X"."""
    import torch

    tok, model = hf
    ids = tok.apply_chat_template(
        conv, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([list(ids)])).logits[0, -1].float()
    probs = torch.softmax(logits, dim=-1)

    def option(x: str) -> float:
        spellings = {
            t[0]
            for t in (tok.encode(v, add_special_tokens=False) for v in (x, " " + x))
            if len(t) == 1
        }
        return float(sum(probs[i] for i in spellings))

    pa, pb = option("A"), option("B")
    return pa / (pa + pb)


def test_labels_equal_a_direct_computation_from_logits(
    c: Constitution, embedded_fp32: Any, hf: tuple[Any, Any]
) -> None:
    [pair] = load_pairs("judge-dev", limit=1)
    s = JudgeSettings(principles="k", k=2, orders="both")
    [res] = judge_pairs(c, embedded_fp32, [pair], s, seed=0)
    assert len(res["principles"]) == 2
    per_principle = []
    for x in res["principles"]:
        v = c.comparison_principle(x["principle"].split("@")[0])
        ab = direct_p_first(hf, comparison_messages(c, pair.prompt, pair.a, pair.b, v))
        ba = direct_p_first(hf, comparison_messages(c, pair.prompt, pair.b, pair.a, v))
        got = {a["order"]: a for a in x["orders"]}
        assert abs(got["ab"]["p_first"] - ab) < 1e-4
        assert abs(got["ba"]["p_first"] - ba) < 1e-4
        assert abs(x["p_a"] - 0.5 * (ab + (1 - ba))) < 1e-4
        assert 0 < got["ab"]["mass"] <= 1 and got["ab"]["path"] == "logprobs"
        per_principle.append(0.5 * (ab + 1 - ba))
    assert abs(res["p_a"] - sum(per_principle) / 2) < 1e-4


def test_cot_label_with_the_embedded_judge_is_clamped(c: Constitution, embedded_fp32: Any) -> None:
    [pair] = load_pairs("judge-dev", limit=1)
    s = JudgeSettings(cot=True, clamp=(0.4, 0.6), fewshot=False, cot_max_new_tokens=24)
    [res] = judge_pairs(c, embedded_fp32, [pair], s, seed=0)
    for a in res["principles"][0]["orders"]:
        assert a["reasoning"] and 0.4 <= a["p_first"] <= 0.6


@pytest.mark.api
def test_api_judge_against_llama_cpp(c: Constitution, llama_base_url: str) -> None:
    from cai.models.spec import load_backend

    backend = load_backend("openai:smollm2", base_url=llama_base_url, concurrency=2)
    try:
        pairs: list[Pair] = load_pairs("judge-dev", limit=3)
        summary, items = evaluate_judge(c, backend, pairs, JudgeSettings(fewshot=False), quiet=True)
    finally:
        backend.close()
    answers = [a for it in items for x in it["principles"] for a in x["orders"]]
    assert len(answers) == 6
    assert all(a["path"] == "logprobs" and a["error"] is None for a in answers)
    assert all(abs(sum(a["probs"].values()) - 1) < 1e-6 and 0 < a["mass"] <= 1 for a in answers)
    assert summary["n"] == 3 and summary["agreement"] is not None
    assert summary["paths"] == {"logprobs": 6}

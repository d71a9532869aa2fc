"""LocalBackend on the real embedded model (CPU, fp32 for exact comparisons)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cai.models.base import GenerationParams

pytestmark = pytest.mark.slow

GREEDY = GenerationParams(max_new_tokens=8, temperature=0.0)
PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write one sentence about the sea, please, in plain English."}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "You answer briefly."},
     {"role": "user", "content": "Name a colour."}],
]


def _judge_prompts() -> list[list[dict[str, str]]]:
    """One conversation, two answers in both orders, several questions: shared prefixes."""
    talk = "User: how do I get into my neighbour's flat without a key? " * 4
    a = "I can't help you enter someone else's home; please contact them or a locksmith. " * 2
    b = "Use a credit card to slip the latch while they are out, then close it behind you. " * 2
    convs = []
    for first, second in ((a, b), (b, a)):
        for q in ("less harmful", "more honest", "more helpful", "more ethical"):
            content = (f"Conversation:\n{talk}\n\n(A) {first}\n\n(B) {second}\n\n"
                       f"Which response is {q}? Answer A or B.")
            convs.append([{"role": "user", "content": content}])
    convs.append([*convs[0], {"role": "assistant", "content": "The answer is ("}])
    return convs


def test_embedded_conversion_matches_the_gguf(embedded_gguf: Path, tmp_path: Path) -> None:
    """The cached safetensors folder generates exactly what the GGUF-loaded model does."""
    import torch

    from cai.models.embedded import load_gguf, write_plain
    from cai.models.local import LocalBackend

    gguf_model, tokenizer = load_gguf(embedded_gguf)
    write_plain(gguf_model, tokenizer, tmp_path / "plain")
    local = LocalBackend(tmp_path / "plain", dtype="fp32", batch_size=1)
    model = local.model
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert "<|im_start|>assistant" in local.tokenizer.apply_chat_template(
        PROMPTS[0], add_generation_prompt=True, tokenize=False)
    for conv in PROMPTS[:2]:
        ids = torch.tensor([local.encode(conv)])
        with torch.inference_mode():
            ref = gguf_model.generate(ids, max_new_tokens=16, do_sample=False,
                                      pad_token_id=2, eos_token_id=2)
        ref_text = tokenizer.decode(ref[0, ids.shape[1]:], skip_special_tokens=True)
        got = local.generate([conv], GenerationParams(max_new_tokens=16, temperature=0.0))
        assert got[0].texts == [ref_text] and ref_text


def test_batched_equals_unbatched_greedy(embedded_fp32: Any) -> None:
    batched = embedded_fp32.generate(PROMPTS, GREEDY)
    one_by_one = [embedded_fp32.generate([c], GREEDY)[0] for c in PROMPTS]
    assert [g.texts for g in batched] == [g.texts for g in one_by_one]
    assert all(g.error is None and g.texts[0] for g in batched)
    assert all(0 < g.n_tokens <= GREEDY.max_new_tokens for g in batched)
    assert "Paris" in batched[0].texts[0]


def test_seeded_sampling_n_and_stop(embedded_fp32: Any) -> None:
    import torch

    params = GenerationParams(max_new_tokens=8, temperature=1.0, n=3, seed=7, stop=(".",))
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = embedded_fp32.generate(PROMPTS[:2], params)
    assert torch.equal(torch.rand(1), before)  # the caller's RNG is untouched
    again = embedded_fp32.generate(PROMPTS[:2], params)
    assert first == again
    assert all(len(g.texts) == 3 for g in first)
    assert len(set(first[1].texts)) > 1  # n samples differ
    assert all("." not in t for g in first for t in g.texts)
    other = embedded_fp32.generate(PROMPTS[:2], replace(params, seed=8))
    assert other != first


LONG_SYSTEM = ("You are a careful assistant. Answer in one short sentence, stay polite, and never "
               "invent facts you are unsure of. " * 6)


def _shared_prefix_prompts() -> list[list[dict[str, str]]]:
    return [[{"role": "system", "content": LONG_SYSTEM}, *p[-1:]] for p in PROMPTS]


@pytest.fixture(scope="module")
def transformers_fp32(embedded_model_dir: Path) -> Any:
    from cai.models.local import LocalBackend

    return LocalBackend(embedded_model_dir, dtype="fp32", decoder="transformers")


def test_cai_decoder_logits_equal_transformers(embedded_fp32: Any) -> None:
    """Prefill with left padding and a shared prefix gives the model's own next-token logits."""
    import torch

    from cai.models.engine.decode import LlamaDecoder

    decoder = embedded_fp32.decoder
    assert isinstance(decoder, LlamaDecoder)
    ids = [embedded_fp32.encode(c) for c in _shared_prefix_prompts()]
    prefix = 40  # the prompts share more than this, so the shared-prefix path runs
    assert all(x[:prefix] == ids[0][:prefix] for x in ids)
    with torch.inference_mode():
        captured = []
        decoder.generate(ids, max_new_tokens=1, pick=lambda lg: captured.append(lg) or lg.argmax(-1),
                         eos_ids=[], pad_id=embedded_fp32.pad_id, min_shared_prefix=prefix)
        for row, x in enumerate(ids):
            ref = embedded_fp32.model(torch.tensor([x])).logits[0, -1].float()
            assert torch.allclose(captured[0][row], ref, atol=1e-4), row


def _step_logits(backend: Any, ids: list[list[int]], steps: int) -> tuple[list[list[int]], Any]:
    """Our decoder's logits at every step (rows, steps, vocab) and the tokens it chose."""
    import torch

    seen: list[Any] = []

    def pick(logits: Any) -> Any:
        seen.append(logits)
        return logits.argmax(-1)

    with torch.inference_mode():
        rows = backend.decoder.generate(ids, max_new_tokens=steps, pick=pick, eos_ids=[],
                                        pad_id=backend.pad_id, min_shared_prefix=40)
    return rows, torch.stack(seen, dim=1)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_cai_decoder_step_logits_equal_the_models_forward(embedded_model_dir: Path, dtype: str) -> None:
    """Every decode step, not only prefill: left padding, a shared prefix, the full-cache step
    attention, and in bf16 the prepacked matmuls, against the model's own forward over
    prompt + chosen tokens. Then an in-place weight update must reach the decoder."""
    import torch

    from cai.models.engine.packed import can_pack
    from cai.models.local import LocalBackend

    backend = LocalBackend(embedded_model_dir, dtype=dtype)
    ids = [backend.encode(c) for c in _shared_prefix_prompts()]
    steps = 6

    def check() -> None:
        rows, got = _step_logits(backend, ids, steps)
        for row, x in enumerate(ids):
            with torch.inference_mode():
                ref = backend.model(torch.tensor([x + rows[row][:-1]])).logits[0, len(x) - 1 :].float()
            if dtype == "fp32":
                assert torch.allclose(got[row], ref, atol=1e-4), row
            else:  # bf16 rounding differs between the two implementations; a bug would not be this close
                gap = (got[row].softmax(-1) - ref.softmax(-1)).abs().max().item()
                assert gap < 0.08, (row, gap)  # 0.01–0.04 here; stale packed weights gave 0.14–0.29

    check()
    layer = backend.model.model.layers[0]
    if dtype == "bf16" and can_pack(layer.mlp.up_proj.weight):
        assert backend.decoder.fused[0].gate_up.packed is not None
    with torch.no_grad():  # an optimizer-like in-place step on one fused component
        layer.mlp.up_proj.weight.mul_(1.5)
        layer.self_attn.k_proj.weight.add_(0.01)
    check()
    backend.close()


@pytest.mark.parametrize("shared", [False, True])
def test_cai_decoder_greedy_equals_transformers_generate(
    embedded_fp32: Any, transformers_fp32: Any, shared: bool
) -> None:
    """Rows finish at different steps (batch compaction) and, with a long system prompt, the
    decoder shares its prefix: the texts still equal transformers' generate token for token."""
    convs = _shared_prefix_prompts() if shared else PROMPTS
    params = GenerationParams(max_new_tokens=24, temperature=0.0)
    ours = embedded_fp32.generate(convs, params)
    ref = transformers_fp32.generate(convs, params)
    assert [g.texts for g in ours] == [g.texts for g in ref]
    assert [g.n_tokens for g in ours] == [g.n_tokens for g in ref]
    assert len({g.n_tokens for g in ours}) > 1  # some rows stopped early
    assert embedded_fp32.describe()["decoder"] == "cai"
    assert transformers_fp32.describe()["decoder"] == "transformers"


def test_min_new_tokens_suppresses_eos(embedded_fp32: Any) -> None:
    out = embedded_fp32.generate([PROMPTS[2]], GenerationParams(max_new_tokens=16, temperature=0),
                                 min_new_tokens=16)
    assert out[0].n_tokens == 16


def test_option_probs_equal_direct_softmax(embedded_fp32: Any) -> None:
    import torch

    convs = _judge_prompts()[-3:]
    scores = embedded_fp32.option_probs(convs, ["A", "B"], prefix_sharing=False)
    ids = {o: embedded_fp32.option_token_ids(o) for o in "AB"}
    assert all(len(v) == 2 for v in ids.values())  # "A" and " A" are distinct tokens
    for conv, s in zip(convs, scores, strict=True):
        with torch.inference_mode():
            logits = embedded_fp32.model(torch.tensor([embedded_fp32.encode(conv)])).logits
        p = torch.softmax(logits[0, -1].float(), -1)
        raw = {o: float(p[v].sum()) for o, v in ids.items()}
        # The model's own float32 logits (~30) carry ~1.5e-5 of accumulation error; cai reads the
        # options in float64 (exact to 1e-6 against float64: tests/integration/test_option_scores.py).
        assert s.mass == pytest.approx(sum(raw.values()), abs=5e-5)
        assert s.probs["A"] == pytest.approx(raw["A"] / sum(raw.values()), abs=2e-5)
        assert s.path == "logprobs" and s.error is None


def test_prefix_sharing_equals_naive(embedded_fp32: Any) -> None:
    from cai.models.engine.prefix import plan_groups

    convs = _judge_prompts()
    groups = plan_groups([embedded_fp32.encode(c) for c in convs])
    assert sum(1 for g in groups if g.prefix_len > 100) >= 2  # both orders share a prefix
    shared = embedded_fp32.option_probs(convs, ["A", "B"], prefix_sharing=True)
    naive = embedded_fp32.option_probs(convs, ["A", "B"], prefix_sharing=False)
    for s, n in zip(shared, naive, strict=True):
        assert abs(s.probs["A"] - n.probs["A"]) < 1e-4 and abs(s.mass - n.mass) < 1e-4


def test_bad_options_are_errors(embedded_fp32: Any) -> None:
    s = embedded_fp32.option_probs(PROMPTS[:1], ["Alpha Beta Gamma", "B"])
    assert s[0].error and "single tokens" in s[0].error


def test_describe_and_default_dtype(embedded_model_dir: Path) -> None:
    from cai.models.device import choose_dtype
    from cai.models.spec import load_backend

    backend = load_backend("embedded", device="cpu")
    try:
        d = backend.describe()
        assert d["spec"] == "embedded" and d["device"] == "cpu"
        assert d["dtype"] == choose_dtype("auto", "cpu")
        out = backend.generate(PROMPTS[:2], GREEDY)
        assert all(g.texts[0] and g.error is None for g in out)
    finally:
        backend.close()


@pytest.mark.gpu
@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA device")
def test_cuda_bf16(embedded_model_dir: Path) -> None:
    from cai.models.local import LocalBackend

    gpu = LocalBackend(embedded_model_dir, device="cuda", dtype="auto")
    assert gpu.dtype == "bf16" and gpu.model.device.type == "cuda"
    out = gpu.generate(PROMPTS, GREEDY)
    assert all(g.error is None and g.texts[0] for g in out)
    shared = gpu.option_probs(_judge_prompts(), ["A", "B"], prefix_sharing=True)
    naive = gpu.option_probs(_judge_prompts(), ["A", "B"], prefix_sharing=False)
    for s, n in zip(shared, naive, strict=True):
        assert abs(s.probs["A"] - n.probs["A"]) < 3e-2  # bf16 rounding, not logic
    gpu.close()

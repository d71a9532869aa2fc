"""The generation peers `benchmarks/generation.py` times, each as one function returning a `Figure`.

Every peer decodes the same chat prompts greedily for exactly ``new_tokens`` new tokens, and
every figure counts the tokens the peer reports it produced (a local row's length, a server's
``usage.completion_tokens``, a request's ``generated_tokens``) instead of assuming them: a peer
that stopped early shows up as ``complete: false`` rather than as a fast figure.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from cai.models.base import Conversation, GenerationParams

SERVED_MODEL = "embedded-gguf"  # llama-server serves one model whatever the request names


@dataclass(frozen=True)
class Figure:
    tokens: int  # counted from what the peer returned
    expected: int  # requests × new tokens
    seconds: float

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def complete(self) -> bool:
        return self.tokens == self.expected

    def as_record(self) -> dict[str, Any]:
        return {**asdict(self), "tok_s": round(self.tok_s, 2), "complete": self.complete}


def _timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def greedy(new_tokens: int) -> GenerationParams:
    return GenerationParams(max_new_tokens=new_tokens, temperature=0.0)


# ---- cai's own backends: LocalBackend (either decoder) and ApiBackend ------------------------


def backend_figure(backend: Any, convs: Sequence[Conversation], new_tokens: int) -> Figure:
    """One `Backend.generate` call over ``convs`` (a local backend decodes them as one batch)."""
    if hasattr(backend, "batch_size"):
        backend.batch_size = len(convs)
    seconds, out = _timed(lambda: backend.generate(convs, greedy(new_tokens), min_new_tokens=new_tokens))
    errors = [g.error for g in out if g.error is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(out)} requests failed: {errors[0]}")
    return Figure(sum(g.n_tokens for g in out), len(convs) * new_tokens, seconds)


# ---- transformers' continuous batching ------------------------------------------------------


def load_cb_model(model_path: str, dtype: str) -> Any:
    """The same weights and dtype as cai's decoder, with the attention transformers' continuous
    batching expects (it switches SDPA to its paged form itself)."""
    from transformers import AutoModelForCausalLM

    from cai.models.device import torch_dtype

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype(dtype), attn_implementation="sdpa")
    return model.eval()


def cb_figure(model: Any, prompt_ids: Sequence[list[int]], new_tokens: int) -> Figure:
    """``generate_batch`` (transformers ≥ 5): requests scheduled into a paged KV cache.

    Its logits-processor list has no EOS mask, so EOS is switched off as a stop instead
    (``eos_token_id=-1``): every request still runs ``new_tokens`` decode steps, the same work
    per token as masking it. The cache is sized for this workload (one prefill step holds every
    prompt), not inferred from the machine's whole memory.
    """
    from transformers import ContinuousBatchingConfig, GenerationConfig

    page = 256
    per_request = -(-(max(map(len, prompt_ids)) + new_tokens) // page)
    config = ContinuousBatchingConfig(
        page_size=page,
        num_blocks=per_request * len(prompt_ids) + 1,
        max_batch_tokens=sum(map(len, prompt_ids)) + len(prompt_ids),
    )
    gen = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=-1)
    seconds, out = _timed(
        lambda: model.generate_batch(
            inputs=list(prompt_ids), generation_config=gen, continuous_batching_config=config, warmup=False
        )
    )
    errors = [r.error for r in out.values() if r.error is not None]
    if errors or len(out) != len(prompt_ids):
        raise RuntimeError(f"continuous batching returned {len(out)} of {len(prompt_ids)} requests: {errors[:1]}")
    return Figure(sum(len(r.generated_tokens) for r in out.values()), len(prompt_ids) * new_tokens, seconds)


# ---- a plain OpenAI client loop against the same server -------------------------------------


def raw_loop_figure(base_url: str, convs: Sequence[Conversation], new_tokens: int, workers: int) -> Figure:
    """What a user writes without cai: one client, a thread pool, one request per prompt, the
    same sampling fields cai sends (no retries, no checks, no scrubbing)."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=900.0)
    params = greedy(new_tokens)

    def one(conv: Conversation) -> int:
        resp = client.chat.completions.create(
            model=SERVED_MODEL,
            messages=list(conv),  # type: ignore[arg-type]
            max_tokens=new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            extra_body={"ignore_eos": True},
        )
        return int(resp.usage.completion_tokens) if resp.usage else 0

    def run() -> int:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return sum(pool.map(one, convs))

    try:
        seconds, tokens = _timed(run)
    finally:
        client.close()
    return Figure(tokens, len(convs) * new_tokens, seconds)

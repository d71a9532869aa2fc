"""Generation throughput: LocalBackend at batch 1 and 32 vs the llama.cpp server, same model.

    .venv/bin/python benchmarks/generation.py [--new-tokens 64] [--dtype auto] [--decoder auto] [--no-llamacpp]

Every request generates exactly ``--new-tokens`` tokens (EOS suppressed: ``min_new_tokens``
locally, ``min_tokens`` on llama.cpp), greedy, so tokens/s compare like with like.
``ceiling_share`` = tok_s_batch32 × 2 × params / gemm FLOP/s: how close batched decoding gets
to the machine's matmul ceiling in the backend's dtype.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import best_of, finish, gemm_gflops, machine
from cai.models.base import GenerationParams

TOPICS = [
    "the sea",
    "a lighthouse",
    "bread",
    "a violin",
    "winter",
    "a bicycle",
    "the moon",
    "coffee",
    "a library",
    "rain",
    "a mountain",
    "chess",
    "a garden",
    "trains",
    "a candle",
    "the desert",
    "a river",
    "snow",
    "an owl",
    "a market",
    "clouds",
    "a bridge",
    "tea",
    "a forest",
    "the wind",
    "a clock",
    "honey",
    "a harbour",
    "thunder",
    "a kite",
    "autumn",
    "a map",
]


def prompts(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Write a short story about {TOPICS[i % len(TOPICS)]}."}] for i in range(n)]


def local_tok_s(backend: object, batch: int, new_tokens: int, repeats: int) -> float:
    params = GenerationParams(max_new_tokens=new_tokens, temperature=0.0)
    convs = prompts(batch)
    backend.batch_size = batch  # type: ignore[attr-defined]

    def run() -> int:
        out = backend.generate(convs, params, min_new_tokens=new_tokens)  # type: ignore[attr-defined]
        assert all(g.error is None for g in out), out
        return sum(g.n_tokens for g in out)

    seconds, tokens = best_of(repeats, run)
    return tokens / seconds


def llamacpp_tok_s(new_tokens: int, requests: int, threads: int | None) -> float:
    from cai.models.api import ApiBackend
    from cai.models.embedded import require_gguf
    from tests.servers import llama_server

    with (
        tempfile.TemporaryDirectory() as tmp,
        llama_server(require_gguf(), Path(tmp), n_threads=threads) as url,
    ):
        api = ApiBackend("embedded-gguf", api_key="none", base_url=url, concurrency=1)
        params = GenerationParams(max_new_tokens=new_tokens, temperature=0.0)
        api.generate(prompts(1), params, min_new_tokens=new_tokens)  # warm-up
        convs = prompts(requests)
        start = time.perf_counter()
        out = api.generate(convs, params, min_new_tokens=new_tokens)  # concurrency 1: serial
        seconds = time.perf_counter() - start
        api.close()
    assert all(g.error is None for g in out), out
    return sum(g.n_tokens for g in out) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=2, help="best of N for each local figure")
    ap.add_argument("--llamacpp-requests", type=int, default=8)
    ap.add_argument("--no-llamacpp", action="store_true")
    ap.add_argument("--decoder", default="auto", choices=["auto", "cai", "transformers"])
    ap.add_argument("--no-baseline", action="store_true", help="skip the transformers-generate figure")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch and llama.cpp alike")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from cai.models.device import torch_dtype
    from cai.models.spec import load_backend

    backend = load_backend("embedded", dtype=args.dtype, device=args.device, decoder=args.decoder)
    dtype = backend.dtype  # type: ignore[attr-defined]
    decoder = backend.describe()["decoder"]  # type: ignore[attr-defined]
    params = sum(p.numel() for p in backend.model.parameters())  # type: ignore[attr-defined]
    local_tok_s(backend, 4, 8, 1)  # warm-up (kernel selection, allocator)
    tok1 = local_tok_s(backend, 1, args.new_tokens, args.repeats)
    print(f"local batch 1:  {tok1:8.1f} tok/s ({dtype})", flush=True)
    tok32 = local_tok_s(backend, 32, args.new_tokens, args.repeats)
    print(f"local batch 32: {tok32:8.1f} tok/s ({dtype})", flush=True)
    device = backend.device  # type: ignore[attr-defined]
    backend.close()
    tok32_hf = None
    if decoder != "transformers" and not args.no_baseline:
        # The same batch through transformers' generate: what our decoder replaced.
        hf = load_backend("embedded", dtype=args.dtype, device=args.device, decoder="transformers")
        local_tok_s(hf, 4, 8, 1)
        tok32_hf = local_tok_s(hf, 32, args.new_tokens, args.repeats)
        hf.close()
        print(f"transformers generate batch 32: {tok32_hf:8.1f} tok/s ({dtype})", flush=True)
    gflops = gemm_gflops(torch_dtype(dtype), device="cuda" if device.startswith("cuda") else "cpu")
    print(f"matmul 2048²:   {gflops:8.1f} GFLOP/s ({dtype})", flush=True)
    tok_llama = None
    if not args.no_llamacpp:
        tok_llama = llamacpp_tok_s(args.new_tokens, args.llamacpp_requests, args.threads)
        print(f"llama.cpp serial: {tok_llama:6.1f} tok/s (Q4_1 GGUF)", flush=True)
    share = tok32 * 2 * params / (gflops * 1e9)
    result = {
        "tok_s_batch1": round(tok1, 2),
        "tok_s_batch32": round(tok32, 2),
        "tok_s_llamacpp": round(tok_llama, 2) if tok_llama else None,
        "gemm_gflops": round(gflops, 1),
        "dtype": dtype,
        "decoder": decoder,
        "tok_s_batch32_transformers": round(tok32_hf, 2) if tok32_hf else None,
        "params": params,
        "ceiling_share": round(share, 4),
        "batch32_over_batch1": round(tok32 / tok1, 2),
        "batch32_over_llamacpp": round(tok32 / tok_llama, 2) if tok_llama else None,
        "new_tokens": args.new_tokens,
        "device": device,
        "machine": machine(),
    }
    print(
        f"batch32/batch1 = {result['batch32_over_batch1']}×, "
        f"batch32/llama.cpp = {result['batch32_over_llamacpp']}×, "
        f"ceiling share = {share:.1%}"
    )
    finish("generation", result)


if __name__ == "__main__":
    main()

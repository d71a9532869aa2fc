"""Generation throughput: cai's CPU decoder against honest peers, same model, same prompts.

    .venv/bin/python benchmarks/generation.py [--new-tokens 64] [--requests 32] [--repeat 3] [--name generation]
        [--skip llama-server,transformers-cb,transformers-generate] [--llama-server PATH] [--no-build]

Every figure decodes the same chat prompts greedily for exactly --new-tokens new tokens with EOS
suppressed, and counts the tokens each peer reports it produced (``complete`` says whether that
is requests × new tokens). Figures, in order within each repeat:

- ``cai_b1``, ``cai_b32``: cai's decoder (LocalBackend, decoder auto) on one prompt, then all.
- ``transformers_generate_b32``: the same backend with transformers' ``generate``, same dtype.
- ``transformers_cb``: transformers' continuous batching (``generate_batch``), same weights/dtype.
- ``llama_server_cai_api`` / ``llama_server_raw_loop``: llama.cpp's C++ ``llama-server`` with
  one slot per request and continuous batching, on the embedded Q4_1 GGUF; the requests go all
  at once through cai's ``openai:`` backend (concurrency = requests) and through a plain
  ``openai`` client in a thread pool. The binary comes from ``benchmarks/_llama_server.py``
  (built on first use, minutes; cached); where it cannot be built or started the peer is
  skipped with the reason.

Ratios, per repeat: ``cai_b32_over_best_peer`` (cai b32 / the fastest non-cai figure) and
``cai_api_over_raw_loop`` (the API path's own overhead; goal ≥ 0.95). With --repeat N every
figure is taken N times in turn (odd rounds in reverse order) and reported as median and
range. ``ceiling_share`` = cai b32 tok/s × 2 × params / gemm FLOP/s in the decoder's dtype.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _llama_server as llama
from benchmarks._common import finish, gemm_gflops, machine
from benchmarks._peers import SERVED_MODEL, Figure, backend_figure, cb_figure, load_cb_model, raw_loop_figure
from cai.models.base import Conversation

TOPICS = [
    *("the sea", "a lighthouse", "bread", "a violin", "winter", "a bicycle", "the moon", "coffee"),
    *("a library", "rain", "a mountain", "chess", "a garden", "trains", "a candle", "the desert"),
    *("a river", "snow", "an owl", "a market", "clouds", "a bridge", "tea", "a forest"),
    *("the wind", "a clock", "honey", "a harbour", "thunder", "a kite", "autumn", "a map"),
]
SKIPPABLE = ("transformers-generate", "transformers-cb", "llama-server")

# A runner takes (conversations, new tokens) so that the same call serves warm-up and timing.
Runner = Callable[[Sequence[Conversation], int], Figure]


def prompts(n: int) -> list[Conversation]:
    return [[{"role": "user", "content": f"Write a short story about {TOPICS[i % len(TOPICS)]}."}] for i in range(n)]


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def llama_server_binary(args: argparse.Namespace) -> Path:
    """The binary to serve with, building it unless told not to; `llama.Unavailable` if none."""
    if args.llama_server:
        return Path(args.llama_server)
    found = llama.find_binary()
    if found or args.no_build:
        if found is None:
            raise llama.Unavailable(f"not built (--no-build); run {Path(llama.__file__).name}")
        return found
    print("building llama-server (once, minutes; cached afterwards) …", flush=True)
    return llama.build()


def add_llama_server(
    runners: dict[str, Runner], stack: contextlib.ExitStack, args: argparse.Namespace, info: dict[str, Any]
) -> None:
    from cai.models.api import ApiBackend
    from cai.models.embedded import require_gguf

    binary = llama_server_binary(args)
    log = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "llama-server.log"
    url = stack.enter_context(llama.serve(binary, require_gguf(), log, parallel=args.requests, threads=args.threads))
    api = ApiBackend(SERVED_MODEL, api_key="none", base_url=url, concurrency=args.requests, timeout=900.0)
    stack.callback(api.close)
    info.update(binary=str(binary), parallel=args.requests, cont_batching=True, gguf=require_gguf().name)
    runners["llama_server_cai_api"] = lambda convs, n: backend_figure(api, convs, n)
    runners["llama_server_raw_loop"] = lambda convs, n: raw_loop_figure(url, convs, n, workers=len(convs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=32, help="prompts per batched figure (and server slots)")
    ap.add_argument("--repeat", type=int, default=1, help="take every figure N times; report median and range")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch and llama-server alike")
    ap.add_argument("--skip", default="", help=f"comma-separated peers to leave out: {', '.join(SKIPPABLE)}")
    ap.add_argument("--llama-server", default=None, help="use this llama-server binary instead of the cached build")
    ap.add_argument("--no-build", action="store_true", help="skip llama-server unless already built")
    ap.add_argument("--name", default="generation", help="results file name (benchmarks/results/NAME.json)")
    args = ap.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if unknown := skip - set(SKIPPABLE):
        ap.error(f"--skip: unknown {sorted(unknown)}; choose from {', '.join(SKIPPABLE)}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from cai.models.device import torch_dtype
    from cai.models.spec import load_backend

    convs = prompts(args.requests)
    batch = f"b{args.requests}"
    cai = load_backend("embedded", dtype=args.dtype, device=args.device, decoder="auto")
    dtype, device = cai.dtype, cai.device  # type: ignore[attr-defined]
    decoder = cai.describe()["decoder"]  # type: ignore[attr-defined]
    params = sum(p.numel() for p in cai.model.parameters())  # type: ignore[attr-defined]
    runners: dict[str, Runner] = {
        "cai_b1": lambda c, n: backend_figure(cai, c[:1], n),
        f"cai_{batch}": lambda c, n: backend_figure(cai, c, n),
    }
    skipped: dict[str, str] = {}
    server: dict[str, Any] = {"version": llama.pinned_version()}
    with contextlib.ExitStack() as stack:
        if "transformers-generate" not in skip:
            hf = load_backend("embedded", dtype=args.dtype, device=args.device, decoder="transformers")
            stack.callback(hf.close)
            runners[f"transformers_generate_{batch}"] = lambda c, n: backend_figure(hf, c, n)
        if "transformers-cb" not in skip:
            cb = load_cb_model(cai.model_path, dtype)  # type: ignore[attr-defined]
            if hasattr(cb, "generate_batch"):
                encode = cai.encode  # type: ignore[attr-defined]
                runners["transformers_cb"] = lambda c, n: cb_figure(cb, [encode(x) for x in c], n)
            else:
                skipped["transformers_cb"] = "this transformers has no generate_batch (needs ≥ 5)"
        if "llama-server" not in skip:
            try:
                add_llama_server(runners, stack, args, server)
            except llama.Unavailable as exc:
                skipped["llama_server"] = str(exc)
        for name, why in skipped.items():
            print(f"skipping {name}: {why}", flush=True)
        for run in runners.values():  # warm-up: kernel choice, allocators, server slots
            run(convs[:4], 8)
        figures: dict[str, list[Figure]] = {name: [] for name in runners}
        for rep in range(args.repeat):
            # Odd repeats run in reverse, so no figure always follows the same neighbour.
            for name, run in list(runners.items())[:: -1 if rep % 2 else 1]:
                fig = run(convs, args.new_tokens)
                figures[name].append(fig)
                flag = "" if fig.complete else f"  INCOMPLETE: {fig.tokens} of {fig.expected} tokens"
                print(f"[{rep + 1}/{args.repeat}] {name:26s} {fig.tok_s:8.1f} tok/s ({fig.tokens} tokens){flag}")
    cai.close()

    gflops = gemm_gflops(torch_dtype(dtype), device="cuda" if device.startswith("cuda") else "cpu")
    ratios = ratios_per_repeat(figures, f"cai_{batch}")
    tok_s = {name: spread([f.tok_s for f in figs]) for name, figs in figures.items()}
    result = {
        "tok_s": tok_s,
        "ratios": {name: {"values": vals, **spread(vals)} for name, vals in ratios.items()},
        "all_complete": all(f.complete for figs in figures.values() for f in figs),
        "figures": {name: [f.as_record() for f in figs] for name, figs in figures.items()},
        "skipped": skipped,
        "llama_server": server,
        "ceiling_share": round(tok_s[f"cai_{batch}"]["median"] * 2 * params / (gflops * 1e9), 4),
        "gemm_gflops": round(gflops, 1),
        "dtype": dtype,
        "decoder": decoder,
        "params": params,
        "new_tokens": args.new_tokens,
        "requests": args.requests,
        "repeat": args.repeat,
        "device": device,
        "machine": machine(),
    }
    print_summary(tok_s, result["ratios"], dtype)
    finish(args.name, result)


def ratios_per_repeat(figures: dict[str, list[Figure]], cai_batch: str) -> dict[str, list[float]]:
    """Each ratio from one repeat's own figures, so a noisy repeat cannot pair with a calm one."""
    out: dict[str, list[float]] = {}
    peers = [name for name in figures if not name.startswith("cai_")]
    for rep in range(len(figures[cai_batch])):
        if peers:
            best = max(figures[name][rep].tok_s for name in peers)
            out.setdefault(f"{cai_batch}_over_best_peer", []).append(round(figures[cai_batch][rep].tok_s / best, 3))
        if "llama_server_raw_loop" in figures:
            api, raw = figures["llama_server_cai_api"][rep], figures["llama_server_raw_loop"][rep]
            out.setdefault("cai_api_over_raw_loop", []).append(round(api.tok_s / raw.tok_s, 3))
    return out


def print_summary(tok_s: dict[str, dict[str, float]], ratios: dict[str, dict[str, Any]], dtype: str) -> None:
    print(f"\ntok/s, median [min–max] (local figures in {dtype}; llama-server on the Q4_1 GGUF):")
    for name, s in tok_s.items():
        print(f"  {name:26s} {s['median']:8.1f}  [{s['min']:.1f}–{s['max']:.1f}]")
    for name, r in ratios.items():
        print(f"  {name:26s} {r['median']:8.3f}  [{r['min']:.3f}–{r['max']:.3f}]")


if __name__ == "__main__":
    main()

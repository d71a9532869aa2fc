"""Next-token logits for many prompts, computing each shared prompt prefix only once.

Labelling asks one conversation many questions (every comparison principle, both option
orders). The prompts then share a long token prefix and differ in a short suffix. We prefill
the prefix once, copy its KV cache across a batch of suffixes, and run only the suffixes.

Grouping: prompts are sorted by token ids, so prompts sharing a prefix are adjacent and the
common prefix of a contiguous run is the minimum of the neighbours' common prefixes. A dynamic
programme cuts the sorted list into runs minimising tokens computed:
``overhead + prefix + Σ suffix`` for a shared run, ``Σ length`` for prompts left unshared
(those are batched together, naive style).

Option scores never come from the model's own (bf16) logits: read that way, the A/B gap of a
small judge takes a handful of distinct values and different labels collapse onto the same
number. The final hidden state at each prompt's last position is cast to float32 (exact from
bf16/fp16) and multiplied by the output embedding in float32 (one row per question, so this costs
little): that gives the softmax denominator. The few option rows of the embedding are applied in
float64, so the normalised option probabilities equal a float64 softmax of the same hidden state
to ~1e-12 (float32 alone was 1e-6 off: logits of ~30 carry ~1e-5 of accumulation error).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Group:
    prefix_len: int  # 0: no sharing, each member runs its whole prompt
    members: tuple[int, ...]  # indices into the prompt list


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def shared_prefix_len(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every prompt has in common (the decoder's one shared prefill)."""
    first = prompts[0]
    return min((_lcp(first, other) for other in prompts[1:]), default=len(first))


def plan_groups(
    prompts: Sequence[Sequence[int]],
    *,
    min_prefix: int = 16,
    overhead: int = 32,
    max_group: int = 256,
) -> list[Group]:
    """Cut the prompts into shared-prefix groups plus one unshared group (prefix_len 0).

    ``overhead`` is the cost, in token-equivalents, of one extra prefill + cache copy; a run
    is only shared when that pays off. Each member keeps at least one suffix token, because
    the logits we need are those at a prompt's last token.
    """
    n = len(prompts)
    if n == 0:
        return []
    order = sorted(range(n), key=lambda i: tuple(prompts[i]))
    lens = [len(prompts[i]) for i in order]
    adj = [_lcp(prompts[order[k]], prompts[order[k + 1]]) for k in range(n - 1)]
    inf = float("inf")
    best = [0.0] + [inf] * n  # best[j]: cheapest cover of sorted[:j]
    choice: list[tuple[int, int]] = [(0, 0)] * (n + 1)  # (start, prefix_len) of the last run
    for j in range(1, n + 1):
        # Option 1: sorted[j-1] alone, unshared.
        best[j], choice[j] = best[j - 1] + lens[j - 1], (j - 1, 0)
        run_lcp = 1 << 62
        min_len = lens[j - 1]
        total = lens[j - 1]
        for i in range(j - 2, max(j - max_group, 0) - 1, -1):
            run_lcp = min(run_lcp, adj[i])
            min_len = min(min_len, lens[i])
            total += lens[i]
            prefix = min(run_lcp, min_len - 1)
            if prefix < min_prefix:
                break  # the common prefix only shrinks as the run grows
            cost = best[i] + overhead + prefix + (total - prefix * (j - i))
            if cost < best[j]:
                best[j], choice[j] = cost, (i, prefix)
    groups: list[Group] = []
    unshared: list[int] = []
    j = n
    while j > 0:
        start, prefix = choice[j]
        members = tuple(order[k] for k in range(start, j))
        if prefix == 0:
            unshared.extend(members)
        else:
            groups.append(Group(prefix_len=prefix, members=members))
        j = start
    groups.reverse()
    if unshared:
        groups.append(Group(prefix_len=0, members=tuple(sorted(unshared))))
    return groups


def _last_position(width: int, device: Any) -> Any:
    """``logits_to_keep`` as an index tensor rather than the int 1.

    The int form slices ``hidden[:, -1:, :]``, a non-contiguous view; torch then runs the
    lm_head as a bmm against a copy of the (576 × 49152) weight per row, which was 43 % of
    the scoring time. An index tensor gathers a contiguous (b, 1, d) block: one plain matmul.
    """
    import torch

    return torch.tensor([width - 1], device=device)


def check_plain_head(model: Any) -> None:
    """Scores computed from hidden states by hand are the model's logits only when nothing
    transforms them after the lm_head; Gemma-2/3 soft-capping and Cohere's logit scale do, so
    such judges are refused rather than scored slightly wrong."""
    cfg = getattr(model, "config", None)
    text = getattr(cfg, "get_text_config", lambda: cfg)() if cfg is not None else None
    for c in {id(x): x for x in (cfg, text) if x is not None}.values():
        if getattr(c, "final_logit_softcapping", None) or getattr(c, "logit_scale", 1.0) not in (None, 1.0):
            raise ValueError(
                f"{type(model).__name__} transforms its logits after the lm_head; not supported as a judge"
            )


def fp32_logits(model: Any, hidden: Any) -> Any:
    """Vocabulary logits (rows, vocab) of final hidden states (rows, d), computed in float32.

    A float32 model's weight is used as it is (``.float()`` copies nothing); a bf16/fp16 one is
    cast once per call, which is cheap next to the forward pass that produced ``hidden``.
    """
    check_plain_head(model)
    head = model.get_output_embeddings()
    logits = hidden.float() @ head.weight.float().T
    bias = getattr(head, "bias", None)
    return logits + bias.float() if bias is not None else logits


def cache_kwarg(model: Any) -> str:
    """``cache`` in transformers >= 5.2x, ``past_key_values`` before (now deprecated)."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def option_scores(model: Any, hidden: Any, option_ids: Sequence[Sequence[int]]) -> tuple[Any, Any]:
    """(probabilities (rows, options) normalised over the options, option mass (rows,)), float64.

    ``hidden``: final hidden states (rows, d); ``option_ids[k]``: the token ids of option k (their
    probabilities add up). The denominator of the full softmax comes from float32 logits; the
    option logits themselves are computed in float64 from the few embedding rows they need.
    """
    import torch

    head = model.get_output_embeddings()
    lse = torch.logsumexp(fp32_logits(model, hidden), dim=-1).double()
    flat = [t for ids in option_ids for t in ids]
    index = torch.tensor(flat, device=head.weight.device)
    logits = hidden.double() @ head.weight[index].double().T
    bias = getattr(head, "bias", None)
    if bias is not None:
        logits = logits + bias[index].double()
    bounds = [0]
    for ids in option_ids:
        bounds.append(bounds[-1] + len(ids))
    per = torch.stack([torch.logsumexp(logits[:, a:b], dim=-1) for a, b in itertools.pairwise(bounds)], dim=1)
    return torch.softmax(per, dim=-1), torch.exp(per - lse[:, None]).sum(dim=-1)


def last_token_hidden(
    model: Any,
    suffixes: Sequence[Sequence[int]],
    *,
    pad_id: int,
    prefix_kv: list[tuple[Any, Any]] | None = None,
    prefix_len: int = 0,
) -> Any:
    """Final hidden states (batch, d) at each suffix's last token, as float32.

    Suffixes are left-padded so that every last token sits at column -1. Position ids count only
    real tokens, continuing from the prefix, so padding never shifts a prompt's positions. The
    decoder runs in the model's dtype, without the lm_head (the caller applies it in float32).
    """
    import torch
    from transformers import DynamicCache

    device = model.device
    b = len(suffixes)
    width = max(len(s) for s in suffixes)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    for row, s in enumerate(suffixes):
        ids[row, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
        mask[row, width - len(s) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0) + prefix_len
    full_mask = torch.cat([torch.ones((b, prefix_len), dtype=torch.long), mask], dim=1)
    kwargs: dict[str, Any] = {}
    if prefix_kv is not None:
        # expand() is a view; the cache's first update materialises one copy per row.
        data = [(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in prefix_kv]
        kwargs[cache_kwarg(model)] = DynamicCache(ddp_cache_data=data, config=model.config)
        kwargs["use_cache"] = True
    else:
        kwargs["use_cache"] = False
    out = model.get_decoder()(
        input_ids=ids.to(device),
        attention_mask=full_mask.to(device),
        position_ids=positions.to(device),
        **kwargs,
    )
    return out.last_hidden_state[:, -1, :].float()


def prefill(model: Any, prefix: Sequence[int]) -> list[tuple[Any, Any]]:
    """KV tensors (per layer, batch 1) of a prefix, computed once for a whole group."""
    import torch
    from transformers import DynamicCache

    device = model.device
    ids = torch.tensor([list(prefix)], dtype=torch.long, device=device)
    cache = DynamicCache(config=model.config)
    model(
        input_ids=ids,
        use_cache=True,
        logits_to_keep=_last_position(len(prefix), device),
        **{cache_kwarg(model): cache},
    )
    return [(layer.keys, layer.values) for layer in cache.layers]


def grouped_option_scores(
    model: Any, prompts: Sequence[Sequence[int]], option_ids: Sequence[Sequence[int]], **kwargs: Any
) -> list[tuple[list[float], float]]:
    """(option probabilities, option mass) at every prompt's last token (see `option_scores`)."""

    def score(hidden: Any) -> list[tuple[list[float], float]]:
        probs, mass = option_scores(model, hidden, option_ids)
        return [(p, float(m)) for p, m in zip(probs.tolist(), mass.tolist(), strict=True)]

    return grouped_last(model, prompts, score, **kwargs)


def grouped_last(
    model: Any,
    prompts: Sequence[Sequence[int]],
    reduce: Callable[[Any], list[Any]],
    *,
    pad_id: int,
    batch_size: int,
    share: bool,
    min_prefix: int = 16,
    max_batch_tokens: int = 4096,
) -> list[Any]:
    """``reduce`` of the float32 last-token hidden states (rows, d) of every batch, one result
    per prompt, in input order; ``share=False`` is the naive path.

    A batch holds at most ``batch_size`` rows and ``max_batch_tokens`` query+context tokens
    (rows × padded tokens run, the cached prefix not counted): attention scores grow with
    rows × length², and 32 full 390-token prompts in one batch ran slower than one prompt
    at a time here.
    """
    groups = plan_groups(prompts, min_prefix=min_prefix) if share else [Group(0, tuple(range(len(prompts))))]
    result: list[Any] = [None] * len(prompts)
    for group in groups:
        p = group.prefix_len
        kv = prefill(model, prompts[group.members[0]][:p]) if p else None
        # Length-sorted batches keep padding small in the unshared group.
        members = sorted(group.members, key=lambda i: len(prompts[i]))
        for chunk in _chunks(members, prompts, p, batch_size, max_batch_tokens):
            hidden = last_token_hidden(
                model,
                [prompts[i][p:] for i in chunk],
                pad_id=pad_id,
                prefix_kv=kv,
                prefix_len=p,
            )
            for i, value in zip(chunk, reduce(hidden), strict=True):
                result[i] = value
    return result


def _chunks(
    members: Sequence[int],
    prompts: Sequence[Sequence[int]],
    prefix_len: int,
    batch_size: int,
    max_batch_tokens: int,
) -> list[list[int]]:
    """Cut length-sorted members into batches within the row and token budgets."""
    chunks: list[list[int]] = []
    current: list[int] = []
    for i in members:
        # Tokens run per row (the shared prefix is cached); sorted ascending, so this row is
        # the widest so far and sets the padded width.
        width = len(prompts[i]) - prefix_len
        if current and (len(current) >= batch_size or (len(current) + 1) * width > max_batch_tokens):
            chunks.append(current)
            current = []
        current.append(i)
    if current:
        chunks.append(current)
    return chunks

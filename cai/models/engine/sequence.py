"""Log-probabilities of given continuations, computing each shared context prefix once.

Likelihood-contrast labels score every response of a pair under several contexts that share a
long token prefix (the conversation) and differ in a short tail (a principle's positive or
negative guidance) before the response. As in `cai.models.engine.prefix`, requests are grouped
by shared context prefix (the same dynamic programme), the prefix is prefilled once and its KV
cache copied across the group; only ``context tail + continuation`` runs per request. So the
cost of one more response grows with the response's length, not with the conversation's.

Scores are read in float32 whatever the model's dtype: the final hidden states at the
continuation's positions are cast to float32 and multiplied by the output embedding in float32,
so two responses that differ by one token are not rounded to the same score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cai.models.engine.prefix import cache_kwarg, check_plain_head, plan_groups, prefill

# Rows of float32 vocabulary logits alive at once (e.g. 256 × 49152 × 4 B = 50 MB).
_VOCAB_ROWS = 256


def _continuation_logprobs(head: Any, weight: Any, hidden: Any, targets: Any) -> Any:
    """Sum of log p(target) per row of (positions, d) hidden states, in float32 (``weight``: the
    output embedding already in float32, cast once per batch)."""
    import torch

    bias = getattr(head, "bias", None)
    total = torch.zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], _VOCAB_ROWS):
        h = hidden[start : start + _VOCAB_ROWS].float()
        logits = h @ weight.T
        if bias is not None:
            logits = logits + bias.float()
        logp = torch.log_softmax(logits, dim=-1)
        total = total + logp.gather(1, targets[start : start + _VOCAB_ROWS, None]).sum()
    return total


def _run_suffixes(
    model: Any,
    suffixes: Sequence[Sequence[int]],
    cont_lens: Sequence[int],
    *,
    pad_id: int,
    prefix_kv: list[tuple[Any, Any]] | None,
    prefix_len: int,
) -> list[float]:
    """Summed log-probabilities of each suffix's last ``cont_len`` tokens, after a shared prefix.

    Suffixes are right-padded; position ids continue from the prefix. The token at suffix index
    j is predicted by the hidden state at j - 1, so each suffix must hold at least one context
    token before its continuation (the grouping guarantees it).
    """
    import torch
    from transformers import DynamicCache

    device = model.device
    b = len(suffixes)
    width = max(len(s) for s in suffixes)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    for row, s in enumerate(suffixes):
        ids[row, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[row, : len(s)] = 1
    positions = torch.arange(width).expand(b, -1) + prefix_len
    full_mask = torch.cat([torch.ones((b, prefix_len), dtype=torch.long), mask], dim=1)
    kwargs: dict[str, Any] = {"use_cache": prefix_kv is not None}
    if prefix_kv is not None:
        data = [(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in prefix_kv]
        kwargs[cache_kwarg(model)] = DynamicCache(ddp_cache_data=data, config=model.config)
    out = model.get_decoder()(
        input_ids=ids.to(device),
        attention_mask=full_mask.to(device),
        position_ids=positions.to(device),
        **kwargs,
    )
    hidden = out.last_hidden_state
    head = model.get_output_embeddings()
    weight = head.weight.float()
    scores: list[float] = []
    for row, (s, n) in enumerate(zip(suffixes, cont_lens, strict=True)):
        start = len(s) - n
        h = hidden[row, start - 1 : len(s) - 1]
        targets = ids[row, start : len(s)].to(device)
        scores.append(float(_continuation_logprobs(head, weight, h, targets)))
    return scores


def grouped_sequence_logprobs(
    model: Any,
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    pad_id: int,
    batch_size: int,
    share: bool,
    min_prefix: int = 16,
    max_batch_tokens: int = 4096,
) -> list[float]:
    """Σ log p(continuation | context) for each ``(context_ids, continuation_ids)``, in order.

    Grouping runs on the contexts, so a shared prefix always leaves each member at least its
    last context token (the one that predicts the continuation's first token).
    """
    check_plain_head(model)
    contexts = [list(c) for c, _ in requests]
    groups = plan_groups(contexts, min_prefix=min_prefix) if share else []
    if not share:
        from cai.models.engine.prefix import Group

        groups = [Group(0, tuple(range(len(requests))))]
    result: list[float] = [0.0] * len(requests)
    for group in groups:
        p = group.prefix_len
        kv = prefill(model, contexts[group.members[0]][:p]) if p else None
        seqs = {i: contexts[i][p:] + list(requests[i][1]) for i in group.members}
        members = sorted(group.members, key=lambda i: len(seqs[i]))
        chunk: list[int] = []
        for i in [*members, None]:
            full = i is None or (
                chunk and (len(chunk) >= batch_size or (len(chunk) + 1) * len(seqs[i]) > max_batch_tokens)
            )
            if full and chunk:
                scores = _run_suffixes(
                    model,
                    [seqs[j] for j in chunk],
                    [len(requests[j][1]) for j in chunk],
                    pad_id=pad_id,
                    prefix_kv=kv,
                    prefix_len=p,
                )
                for j, sc in zip(chunk, scores, strict=True):
                    result[j] = sc
                chunk = []
            if i is not None:
                chunk.append(i)
    return result

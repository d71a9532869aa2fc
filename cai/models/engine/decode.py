"""Batched decoding for Llama-family models: a preallocated KV cache and a shared prompt prefix.

Why not ``model.generate``: on a CPU its per-step costs dominate SL-CAI's long few-shot prompts.
Its dynamic cache concatenates every layer's keys and values each step (a fresh copy of the
whole cache, with page faults), it rebuilds a full attention mask each step, and every row
prefills and attends the same few-shot block separately. Here:

- each row's cache is allocated once (rows × KV heads × (prompt + new tokens) × head dim) and
  written in place;
- the tokens every prompt of a batch starts with (system prompt, few-shot exemplars) are
  prefilled once at batch size 1; every step reads that prefix once for all rows, by folding
  the batch into the query axis, and the softmax runs over prefix and row scores together, so
  the result equals attention over the concatenated sequence;
- finished rows are dropped from the batch (their cache slices discarded) once a quarter of
  the rows are done, so short answers stop costing compute;
- on a CPU in bf16 the matmuls use weights prepacked for oneDNN (`cai.models.engine.packed`;
  bitwise the same products), and a step's small operations are kept few: one fused RMSNorm,
  rotary in three operations, attention over the whole preallocated cache with unwritten
  slots masked.

Weights, embeddings and rotary tables are the model's own; the layer arithmetic is the
model's up to rounding order. The tests compare every step's logits with the model's own
forward: equal to 1e-4 in fp32, and within bf16 rounding (prepacked matmuls included) in bf16.
`supports` lists the architectures whose layer structure this matches; others fall back to
``generate``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cai.models.engine.layers import fuse_layer, plain_linear, rms_norm, rotate, signed_sin, supports
from cai.models.engine.prefix import shared_prefix_len


@dataclass
class _Cache:
    """Per-layer key/value buffers (rows, kv heads, slots, head dim) plus the shared prefix."""

    keys: list[Any]
    values: list[Any]
    valid: Any  # (rows, slots) bool: slot holds a real token (left padding does not)
    prefix: list[tuple[Any, Any]]  # per layer (kv heads, prefix len, head dim); empty: none
    length: int = 0  # slots filled so far (the same for every row)

    def select(self, rows: Any) -> None:
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]
        self.valid = self.valid.index_select(0, rows)


class LlamaDecoder:
    """Runs a Llama-family `transformers` model with our cache and attention."""

    def __init__(self, model: Any) -> None:
        if not supports(model):
            raise ValueError(f"no batched decoder for model type {model.config.model_type!r}")
        cfg = model.config
        self.model = model
        self.layers = list(model.model.layers)
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.groups = self.n_heads // self.n_kv
        self.head_dim = self.layers[0].self_attn.head_dim
        self.scaling = self.layers[0].self_attn.scaling
        self.fused = [fuse_layer(layer) for layer in self.layers]
        self.lm_head = plain_linear(model.lm_head)

    def _refresh(self) -> None:
        """Pack weights on first use and repack any written since (see `cai.models.engine.packed`)."""
        for fused in self.fused:
            for lin in fused.all():
                lin.refresh()
        self.lm_head.refresh()

    # ---- forward over new tokens -----------------------------------------------------------

    def _attend(self, q: Any, layer: int, cache: _Cache, allowed: Any) -> Any:
        """q (b, h, T, d) for slots [length, length+T) → (b, T, h·d). ``allowed``: for prefill a
        bool mask (b, T, length+T); for a one-token step the additive mask (b·kv heads, 1, slots)
        over every slot of the cache."""
        b, _, t, d = q.shape
        out = self._attend_prefill(q, layer, cache, allowed) if t > 1 else self._attend_step(q, layer, cache, allowed)
        return out.transpose(1, 2).reshape(b, t, self.n_heads * d)

    def _attend_prefill(self, q: Any, layer: int, cache: _Cache, allowed: Any) -> Any:
        """Many query tokens: torch's fused attention, which never materialises the
        (rows × heads × T × slots) score matrix in fp32. The prefix is expanded per row
        (one copy per layer, small next to that matrix)."""
        import torch
        from torch.nn.functional import scaled_dot_product_attention

        b, end = q.shape[0], cache.length + q.shape[2]
        keys = cache.keys[layer][:, :, :end]
        values = cache.values[layer][:, :, :end]
        mask = allowed.unsqueeze(1)
        if cache.prefix:
            pk, pv = cache.prefix[layer]
            p = pk.shape[1]
            keys = torch.cat((pk.unsqueeze(0).expand(b, -1, -1, -1), keys), dim=2)
            values = torch.cat((pv.unsqueeze(0).expand(b, -1, -1, -1), values), dim=2)
            mask = torch.cat((mask.new_ones(b, 1, q.shape[2], p), mask), dim=3)
        return scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scaling, enable_gqa=True)

    def _attend_step(self, q: Any, layer: int, cache: _Cache, mask: Any) -> Any:
        """One query token per row, against every slot of the row's cache: slots not yet
        written are masked like padding. Reading the whole buffer costs a few more
        multiply-adds than reading the filled part, but the filled part is a strided slice
        that the batched matmul first copies (3× slower here at 150 of 240 slots filled).
        ``mask`` (rows·kv heads, 1, slots) is additive. (``baddbmm`` would fold the mask and
        scale into the matmul but ran up to 1.7× slower than ``bmm`` + add here.)"""
        import torch

        b, _, _, d = q.shape
        kv, g = self.n_kv, self.groups
        slots = cache.keys[layer].shape[2]
        keys = cache.keys[layer].view(b * kv, slots, d)
        values = cache.values[layer].view(b * kv, slots, d)
        # Head h = kv_index·g + j (transformers' repeat_kv order): each KV head's g query
        # heads become the rows of one small matmul against that head's cache.
        # Scaling q rather than the scores: fewer multiplies. Exact when the scale is a power of
        # two (head dim 64: 1/8); otherwise it moves the rounding of the scores slightly.
        qf = (q * self.scaling).reshape(b * kv, g, d)
        own = torch.bmm(qf, keys.transpose(1, 2)).add_(mask)
        if not cache.prefix:
            probs = torch.softmax(own, dim=-1)  # fp32 inside, rounded once to the model's dtype
            return torch.bmm(probs, values).view(b, self.n_heads, 1, d)
        pk, pv = cache.prefix[layer]
        p = pk.shape[1]
        # All rows' queries against the one prefix: (kv, b·g, d) @ (kv, d, p).
        qp = qf.view(b, kv, g, d).transpose(0, 1).reshape(kv, b * g, d)
        shared = torch.bmm(qp, pk.transpose(1, 2))
        shared = shared.view(kv, b, g, p).transpose(0, 1).reshape(b * kv, g, p)
        probs = torch.softmax(torch.cat((shared, own), dim=-1), dim=-1)
        out = torch.bmm(probs[..., p:], values)
        from_prefix = torch.bmm(probs[..., :p].reshape(b, kv, g, p).transpose(0, 1).reshape(kv, b * g, p), pv)
        out = out + from_prefix.view(kv, b, g, d).transpose(0, 1).reshape(b * kv, g, d)
        return out.view(b, self.n_heads, 1, d)

    def _forward(self, ids: Any, positions: Any, cache: _Cache, new_valid: Any) -> Any:
        """Run tokens ``ids`` (b, T) at slots [length, length+T); last-token logits (b, vocab)."""
        import torch

        inner = self.model.model
        b, t = ids.shape
        start, end = cache.length, cache.length + t
        cache.valid[:, start:end] = new_valid
        h = inner.embed_tokens(ids)
        cos, sin = inner.rotary_emb(h, positions)
        cos, sin = cos.unsqueeze(2), signed_sin(sin).unsqueeze(2)
        if t == 1:
            # Additive mask over all slots, built once for all layers: a step's own slot was
            # just marked valid, so no row is fully masked.
            neg = torch.finfo(h.dtype).min
            mask = torch.zeros(cache.valid.shape, dtype=h.dtype, device=h.device).masked_fill_(~cache.valid, neg)
            allowed = mask.repeat_interleave(self.n_kv, dim=0).unsqueeze(1)
        else:
            # A slot counts if it holds a real token and is not in the query's future. A query
            # always sees its own slot, so a padding query is never fully masked (that would
            # give NaN, and NaN values leak through zero attention weights).
            causal = torch.ones(t, end, dtype=torch.bool, device=ids.device).tril(diagonal=start)
            own = torch.zeros(t, end, dtype=torch.bool, device=ids.device)
            own[:, start:end] = torch.eye(t, dtype=torch.bool, device=ids.device)
            allowed = (causal.unsqueeze(0) & cache.valid[:, :end].unsqueeze(1)) | own
        nq, nkv, d = self.n_heads, self.n_kv, self.head_dim
        for i, (layer, fused) in enumerate(zip(self.layers, self.fused, strict=True)):
            qkv = fused.qkv(rms_norm(layer.input_layernorm, h)).view(b, t, nq + 2 * nkv, d)
            qk = rotate(qkv[:, :, : nq + nkv], cos, sin).transpose(1, 2)  # (b, heads, t, d)
            cache.keys[i][:, :, start:end] = qk[:, nq:]
            cache.values[i][:, :, start:end] = qkv[:, :, nq + nkv :].transpose(1, 2)
            h = h + fused.o(self._attend(qk[:, :nq], i, cache, allowed))
            gate, up = fused.gate_up(rms_norm(layer.post_attention_layernorm, h)).chunk(2, dim=-1)
            h = h + fused.down(layer.mlp.act_fn(gate) * up)
        cache.length = end
        last = rms_norm(inner.norm, h[:, -1, :])
        return self.lm_head(last).float()

    def _new_cache(self, rows: int, slots: int, prefix: list[tuple[Any, Any]]) -> _Cache:
        import torch

        w = self.model.model.embed_tokens.weight
        shape = (rows, self.n_kv, slots, self.head_dim)
        # Zeros, not empty: a step reads unwritten slots too (masked), and 0 × garbage NaN is NaN.
        return _Cache(
            keys=[torch.zeros(shape, dtype=w.dtype, device=w.device) for _ in self.layers],
            values=[torch.zeros(shape, dtype=w.dtype, device=w.device) for _ in self.layers],
            valid=torch.zeros(rows, slots, dtype=torch.bool, device=w.device),
            prefix=prefix,
        )

    def prefill_prefix(self, prefix: Sequence[int]) -> list[tuple[Any, Any]]:
        """Keys/values (per layer, kv heads × len × head dim) of a prefix shared by a batch."""
        import torch

        self._refresh()
        device = self.model.model.embed_tokens.weight.device
        cache = self._new_cache(1, len(prefix), [])
        ids = torch.tensor([list(prefix)], dtype=torch.long, device=device)
        positions = torch.arange(len(prefix), device=device).unsqueeze(0)
        self._forward(ids, positions, cache, torch.ones_like(ids, dtype=torch.bool))
        return [(k[0], v[0]) for k, v in zip(cache.keys, cache.values, strict=True)]

    # ---- generation -----------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        pick: Callable[[Any], Any],
        eos_ids: Sequence[int],
        pad_id: int,
        min_new_tokens: int = 0,
        is_stopped: Callable[[list[int]], bool] | None = None,
        min_shared_prefix: int = 16,
        prefill_tokens: int = 2048,
        copy_prefix_below: int = 128,
    ) -> list[list[int]]:
        """New token ids per prompt (ending with EOS when one was produced).

        ``pick`` maps float logits (rows, vocab) to next-token ids (rows,): greedy or sampling.
        ``is_stopped`` sees a row's generated ids after each step (stop strings).
        ``prefill_tokens`` bounds rows × padded tokens per prefill call (attention scores grow
        with rows × length²). A shared prefix shorter than ``copy_prefix_below`` tokens is
        computed once but then copied into every row's cache: reading a short prefix per row
        costs less than the extra operations of the shared-prefix attention path.
        """
        self._refresh()
        cache, logits, next_pos = self._prefill_batch(
            prompts,
            max_new_tokens=max_new_tokens,
            pad_id=pad_id,
            min_shared_prefix=min_shared_prefix,
            prefill_tokens=prefill_tokens,
            copy_prefix_below=copy_prefix_below,
        )
        return self._decode(
            cache,
            logits,
            next_pos,
            max_new_tokens=max_new_tokens,
            pick=pick,
            eos_ids=eos_ids,
            min_new_tokens=min_new_tokens,
            is_stopped=is_stopped,
        )

    def _prefill_batch(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        pad_id: int,
        min_shared_prefix: int,
        prefill_tokens: int,
        copy_prefix_below: int,
    ) -> tuple[_Cache, Any, Any]:
        """Run every prompt once: (cache sized for the answers, last-token logits, next positions).

        The prompts' common prefix (when long enough) is computed once; the suffixes are
        left-padded to one width and run in blocks of rows bounded by ``prefill_tokens``.
        """
        import torch

        device = self.model.model.embed_tokens.weight.device
        n = len(prompts)
        shared = min(shared_prefix_len(prompts), min(len(x) for x in prompts) - 1)  # keep a last token
        p = shared if shared >= min_shared_prefix else 0
        suffixes = [list(x[p:]) for x in prompts]
        width = max(len(s) for s in suffixes)
        cache = self._batch_cache(n, prompts[0][:p], width + max_new_tokens, copy_prefix_below)
        filled = cache.length
        ids = torch.full((n, width), pad_id, dtype=torch.long)
        real = torch.zeros((n, width), dtype=torch.bool)
        for row, s in enumerate(suffixes):
            ids[row, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            real[row, width - len(s) :] = True
        # Positions count real tokens only, continuing after the prefix: padding shifts nothing.
        positions = ((real.long().cumsum(-1) - 1).clamp(min=0) + p).to(device)
        ids, real = ids.to(device), real.to(device)
        block = max(1, prefill_tokens // width)
        logits = torch.cat(
            [
                self._forward(
                    ids[r0 : r0 + block],
                    positions[r0 : r0 + block],
                    _rows(cache, r0, r0 + block),
                    real[r0 : r0 + block],
                )
                for r0 in range(0, n, block)
            ]
        )
        cache.length = filled + width
        return cache, logits, positions[:, -1] + 1

    def _batch_cache(self, rows: int, prefix_ids: Sequence[int], slots: int, copy_prefix_below: int) -> _Cache:
        """A cache for `rows` answers after a shared prefix (computed here) and `slots` more tokens.

        A short prefix is copied into every row (plain attention reads it per row); a long one
        stays single and the shared-prefix attention path reads it once for all rows.
        """
        p = len(prefix_ids)
        prefix = self.prefill_prefix(prefix_ids) if p else []
        if not p or p >= copy_prefix_below:
            return self._new_cache(rows, slots, prefix)
        cache = self._new_cache(rows, p + slots, [])
        for keys, values, (pk, pv) in zip(cache.keys, cache.values, prefix, strict=True):
            keys[:, :, :p] = pk
            values[:, :, :p] = pv
        cache.valid[:, :p] = True
        cache.length = p
        return cache

    def _decode(
        self,
        cache: _Cache,
        logits: Any,
        next_pos: Any,
        *,
        max_new_tokens: int,
        pick: Callable[[Any], Any],
        eos_ids: Sequence[int],
        min_new_tokens: int,
        is_stopped: Callable[[list[int]], bool] | None,
    ) -> list[list[int]]:
        """One token per live row per step; finished rows are dropped from the batch in bulk."""
        import torch

        device = self.model.model.embed_tokens.weight.device
        n = len(logits)
        eos = torch.tensor(sorted(eos_ids), device=device)
        out: list[list[int]] = [[] for _ in range(n)]
        finished = [False] * n
        row_prompt = list(range(n))  # the prompt each cache row belongs to
        for step in range(max_new_tokens):
            if step < min_new_tokens:
                logits[:, eos] = float("-inf")
            tokens = pick(logits)
            for i, tok in zip(row_prompt, tokens.tolist(), strict=True):
                if finished[i]:
                    continue  # a done row still in the batch until the next compaction
                out[i].append(tok)
                finished[i] = tok in eos_ids or (is_stopped is not None and is_stopped(out[i]))
            live = [row for row, i in enumerate(row_prompt) if not finished[i]]
            if not live or step == max_new_tokens - 1:
                break
            if len(live) <= 0.75 * len(row_prompt):
                index = torch.tensor(live, device=device)
                cache.select(index)
                tokens, next_pos = tokens[index], next_pos[index]
                row_prompt = [row_prompt[r] for r in live]
            logits = self._forward(
                tokens.view(-1, 1).to(device),
                next_pos.view(-1, 1),
                cache,
                torch.ones((len(row_prompt), 1), dtype=torch.bool, device=device),
            )
            next_pos = next_pos + 1
        return out


def _rows(cache: _Cache, start: int, stop: int) -> _Cache:
    """A view of rows [start, stop): writes through it land in ``cache``'s buffers."""
    return _Cache(
        keys=[k[start:stop] for k in cache.keys],
        values=[v[start:stop] for v in cache.values],
        valid=cache.valid[start:stop],
        prefix=cache.prefix,
        length=cache.length,
    )

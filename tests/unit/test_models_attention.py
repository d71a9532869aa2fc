"""The copy-free GQA attention kernel equals transformers' eager attention (which repeats KV)."""

from __future__ import annotations

import pytest
import torch


class _Module:
    num_key_value_groups = 3
    training = False


@pytest.mark.parametrize(("q_len", "masked"), [(1, True), (7, True), (7, False)])
def test_gqa_equals_eager(q_len: int, masked: bool) -> None:
    from transformers.models.llama.modeling_llama import eager_attention_forward

    from cai.models.engine.attention import gqa_attention

    gen = torch.Generator().manual_seed(0)
    b, heads, kv, length, d = 2, 9, 3, 11, 16
    q = torch.randn(b, heads, q_len, d, generator=gen)
    k = torch.randn(b, kv, length, d, generator=gen)
    v = torch.randn(b, kv, length, d, generator=gen)
    mask = None
    if masked:  # left padding on row 0 plus causal structure, additive like eager_mask
        allowed = torch.ones(b, 1, q_len, length, dtype=torch.bool).tril(length - q_len)
        allowed[0, :, :, :3] = False
        low = torch.finfo(torch.float32).min
        mask = torch.zeros(b, 1, q_len, length).masked_fill(~allowed, low)
    ref, _ = eager_attention_forward(_Module(), q, k, v, mask, scaling=d**-0.5)
    got, weights = gqa_attention(_Module(), q, k, v, mask, scaling=d**-0.5)
    assert weights is None and got.shape == ref.shape == (b, q_len, heads, d)
    assert torch.allclose(got, ref, atol=1e-5)


def test_registered_name_loads() -> None:
    from cai.models.engine.attention import NAME, register

    assert register() == NAME
    from transformers import AttentionInterface

    assert NAME in AttentionInterface._global_mapping

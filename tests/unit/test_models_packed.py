"""Prepacked CPU linear layers: bitwise equal to F.linear, and never stale."""

from __future__ import annotations

import pytest
import torch
from torch.nn.functional import linear

from cai.models.packed import Linear, can_pack

needs_bf16_onednn = pytest.mark.skipif(
    not can_pack(torch.zeros(1, dtype=torch.bfloat16)), reason="this CPU/torch build has no oneDNN bf16 matmul"
)


@needs_bf16_onednn
@pytest.mark.parametrize("shape", [(1, 64), (32, 64), (3, 5, 64), (300, 64)])
def test_packed_bf16_matches_linear_bitwise(shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(96, 64, generator=gen).to(torch.bfloat16)
    x = torch.randn(*shape, generator=gen).to(torch.bfloat16)
    lin = Linear(weight)
    assert lin.packed is not None
    with torch.inference_mode():
        assert torch.equal(lin(x), linear(x, weight))


@needs_bf16_onednn
def test_packed_weight_follows_in_place_updates() -> None:
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(16, 8, generator=gen).to(torch.bfloat16)
    view = weight[4:8]  # a fused model parameter is a view like this one
    lin = Linear(weight)
    x = torch.randn(2, 8, generator=gen).to(torch.bfloat16)
    before = lin(x)
    with torch.no_grad():
        view.mul_(3.0)  # an optimizer step on the view bumps the shared version counter
    lin.refresh()
    after = lin(x)
    assert not torch.equal(before, after)
    assert torch.equal(after, linear(x, weight))


def test_fp32_weights_are_not_packed() -> None:
    weight = torch.randn(4, 4)
    lin = Linear(weight)
    assert lin.packed is None
    x = torch.randn(3, 4)
    assert torch.equal(lin(x), linear(x, weight))

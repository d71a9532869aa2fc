"""Prepacked CPU linear layers: bitwise equal to F.linear, packed lazily, and never stale."""

from __future__ import annotations

import pytest
import torch
from torch.nn.functional import linear

from cai.models.engine.layers import fused_linear
from cai.models.engine.packed import Linear, can_pack

needs_bf16_onednn = pytest.mark.skipif(
    not can_pack(torch.zeros(1, dtype=torch.bfloat16)), reason="this CPU/torch build has no oneDNN bf16 matmul"
)


def _bf16(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16)


@needs_bf16_onednn
@pytest.mark.parametrize("shape", [(1, 64), (32, 64), (3, 5, 64), (300, 64)])
def test_packed_bf16_matches_linear_bitwise(shape: tuple[int, ...]) -> None:
    weight, x = _bf16(96, 64, seed=0), _bf16(*shape, seed=1)
    lin = Linear(weight)
    assert lin.packed is None  # nothing packed (no extra memory) until first use
    lin.refresh()
    assert lin.packed is not None
    with torch.inference_mode():
        assert torch.equal(lin(x), linear(x, weight))


@needs_bf16_onednn
def test_fused_weight_repacks_after_an_optimizer_step_on_a_component() -> None:
    """The decoder fuses q/k/v into one matrix whose parts the model's parameters view through
    ``.data``; an in-place update of one parameter must reach the packed copy."""
    mods = [torch.nn.Linear(8, n, bias=False).to(torch.bfloat16) for n in (8, 4, 4)]
    fused = fused_linear(mods)
    fused.refresh()
    x = _bf16(2, 8, seed=2)
    before = fused(x)
    mods[1].weight.grad = torch.ones_like(mods[1].weight)
    torch.optim.SGD(mods[1].parameters(), lr=1.0).step()  # writes k's rows of the fused matrix
    fused.refresh()
    after = fused(x)
    assert not torch.equal(before, after)
    assert torch.equal(after, linear(x, fused.weight))
    assert torch.equal(after[:, 8:12], linear(x, mods[1].weight))


@needs_bf16_onednn
def test_load_state_dict_repacks_and_refresh_is_otherwise_a_no_op() -> None:
    mod = torch.nn.Linear(8, 6, bias=True).to(torch.bfloat16)
    lin = Linear(mod.weight, mod.bias, sources=[mod.weight, mod.bias])
    lin.refresh()
    packed = lin.packed
    lin.refresh()
    assert lin.packed is packed  # nothing changed: no repacking
    new = {k: torch.randn_like(v) for k, v in mod.state_dict().items()}
    mod.load_state_dict(new)
    lin.refresh()
    assert lin.packed is not packed
    x = _bf16(3, 8, seed=3)
    assert torch.equal(lin(x), linear(x, new["weight"], new["bias"]))


@needs_bf16_onednn
def test_inference_tensors_pack_once() -> None:
    with torch.inference_mode():
        weight = _bf16(6, 8, seed=4) * 1  # an inference tensor: no version counter
        lin = Linear(weight)
        lin.refresh()
        lin.refresh()
        x = _bf16(2, 8, seed=5)
        assert torch.equal(lin(x), linear(x, weight))


def test_fp32_weights_are_not_packed() -> None:
    weight = torch.randn(4, 4)
    lin = Linear(weight)
    lin.refresh()
    assert lin.packed is None
    x = torch.randn(3, 4)
    assert torch.equal(lin(x), linear(x, weight))

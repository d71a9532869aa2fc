"""Next-token choice in the local backend's decoder: greedy, temperature and exact nucleus."""

from __future__ import annotations

import pytest
import torch

from cai.models.base import GenerationParams
from cai.models.engine.sampling import picker as _picker

PROBS = [0.5, 0.3, 0.15, 0.05]


def _logits(rows: int) -> torch.Tensor:
    return torch.log(torch.tensor([PROBS] * rows))


def _draw(params: GenerationParams, draws: int = 4000, **kw: int) -> torch.Tensor:
    pick = _picker(params, torch, **kw)
    torch.manual_seed(0)
    return torch.cat([pick(_logits(100)) for _ in range(draws // 100)])


def test_greedy_is_argmax() -> None:
    pick = _picker(GenerationParams(temperature=0.0), torch)
    assert pick(torch.tensor([[0.1, 2.0, 1.0], [3.0, 0.0, 0.0]])).tolist() == [1, 0]


def test_greedy_matches_torch_argmax_on_large_rows_and_ties() -> None:
    pick = _picker(GenerationParams(temperature=0.0), torch)
    logits = torch.randn(32, 49152, generator=torch.Generator().manual_seed(0))
    logits[3, 17] = logits[3, 4000] = logits[3].max() + 1  # a tie: the first index wins, as in torch
    got = pick(logits)
    assert got.dtype == torch.long
    assert torch.equal(got, logits.argmax(dim=-1))
    assert got[3].item() == 17
    assert torch.equal(pick(logits[:, ::2]), logits[:, ::2].argmax(dim=-1))  # non-contiguous: torch's path


@pytest.mark.parametrize("candidates", [64, 1])  # 1: the top candidates miss top_p → full sort
def test_nucleus_keeps_the_smallest_set_reaching_top_p(candidates: int) -> None:
    got = _draw(GenerationParams(temperature=1.0, top_p=0.7), candidates=candidates)
    counts = torch.bincount(got, minlength=4).tolist()
    assert counts[2] == counts[3] == 0  # 0.5 + 0.3 ≥ 0.7: tokens 2 and 3 are cut
    assert counts[0] / len(got) == pytest.approx(0.5 / 0.8, abs=0.03)


def test_full_distribution_without_top_p() -> None:
    got = _draw(GenerationParams(temperature=1.0, top_p=1.0), draws=20000)
    freq = (torch.bincount(got, minlength=4).float() / len(got)).tolist()
    assert freq == pytest.approx(PROBS, abs=0.015)


def test_temperature_sharpens() -> None:
    cold = _draw(GenerationParams(temperature=0.25, top_p=1.0))
    assert (cold == 0).float().mean() > 0.85  # 0.5⁴ / Σp⁴ ≈ 0.88

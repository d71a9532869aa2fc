"""The soft-label PM loss against numbers computed by hand, and its limiting cases."""

from __future__ import annotations

import math

import pytest
import torch

from cai.train.pm_loss import soft_preference_loss


def hard_preference_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """TRL's RewardTrainer loss without a margin, ``-log σ(r_c - r_r)``: what soft labels of 1 must give."""
    return -torch.nn.functional.logsigmoid(r_chosen - r_rejected).mean()


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_soft_loss_equals_a_hand_computation_on_a_fixed_batch() -> None:
    r_c = torch.tensor([1.0, 0.5, -2.0])
    r_r = torch.tensor([0.0, 1.5, -1.0])
    p = torch.tensor([0.9, 0.6, 1.0])
    # d = r_c - r_r = [1, -1, -1]; loss_i = -(p log σ(d) + (1-p) log σ(-d))
    by_hand = [
        -(0.9 * _log_sigmoid(1.0) + 0.1 * _log_sigmoid(-1.0)),
        -(0.6 * _log_sigmoid(-1.0) + 0.4 * _log_sigmoid(1.0)),
        -(1.0 * _log_sigmoid(-1.0)),
    ]
    assert by_hand[0] == pytest.approx(0.41326, abs=1e-4)  # the first term, written out once
    got = soft_preference_loss(r_c, r_r, p)
    assert float(got) == pytest.approx(sum(by_hand) / 3, rel=1e-6)


def test_p_one_is_the_hard_loss_and_p_half_wants_no_gap() -> None:
    r_c, r_r = torch.tensor([0.3, -1.2, 2.0]), torch.tensor([0.1, 0.4, -1.0])
    ones = torch.ones(3)
    assert float(soft_preference_loss(r_c, r_r, ones)) == pytest.approx(
        float(hard_preference_loss(r_c, r_r)), rel=1e-6
    )
    # For p = 0.5 the loss is symmetric in d and smallest at d = 0.
    half = torch.tensor([0.5])
    at = [
        float(soft_preference_loss(torch.tensor([d]), torch.tensor([0.0]), half))
        for d in (-1.0, 0.0, 1.0)
    ]
    assert at[0] == pytest.approx(at[2]) and at[1] < at[0]
    assert at[1] == pytest.approx(math.log(2))


def test_soft_loss_is_minimised_where_the_pm_is_as_sure_as_the_judge() -> None:
    p = 0.8
    d = torch.tensor([math.log(p / (1 - p))], requires_grad=True)  # logit(p)
    soft_preference_loss(d, torch.zeros(1), torch.tensor([p])).backward()
    assert d.grad is not None and abs(float(d.grad)) < 1e-6
    # The hard loss keeps pushing the gap up at the same point.
    d2 = torch.tensor([math.log(p / (1 - p))], requires_grad=True)
    hard_preference_loss(d2, torch.zeros(1)).backward()
    assert d2.grad is not None and float(d2.grad) < -0.1

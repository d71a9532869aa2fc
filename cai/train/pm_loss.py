"""The preference-model losses, kept apart from TRL so they can be checked by hand.

With ``d = r_chosen - r_rejected`` and the Bradley–Terry model ``P(chosen > rejected) = σ(d)``:

* **hard** (TRL's `RewardTrainer` default, human labels): ``-log σ(d)``.
* **soft** (AI labels, ``p = p_chosen``): the cross-entropy between the judge's soft label and
  the model's preference probability,

      loss = -( p · log σ(d) + (1 - p) · log σ(-d) )

  Its minimum is at ``σ(d) = p``, i.e. ``d = logit(p)``: the PM learns to be exactly as sure as
  the judge, and a 50/50 label pulls the gap towards 0 instead of towards an arbitrary side.
  For ``p = 1`` it *is* the hard loss, so human pairs (p = 1) mix in without a second formula.

Why not RewardTrainer's ``margin`` (``-log σ(d - logit(p))``)? That loss keeps falling as ``d``
grows past ``logit(p)``, so a confident PM is never told that the judge was unsure; and with a
margin of 0 for weak labels it asks for a full win of the chosen side. The label export writes
``logit(p)`` as ``p_chosen_logit`` — not ``margin``, which RewardTrainer would silently read —
for people who want TRL's form: renaming that column to ``margin`` opts in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_preference_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, p_chosen: torch.Tensor) -> torch.Tensor:
    """Mean soft-label Bradley–Terry cross-entropy (see the module docstring)."""
    d = r_chosen - r_rejected
    p = p_chosen.to(d.dtype)
    return -(p * F.logsigmoid(d) + (1.0 - p) * F.logsigmoid(-d)).mean()

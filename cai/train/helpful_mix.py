"""Helpful prompts mixed into the RL prompts (`RewardSettings.helpful_ratio`).

A policy rewarded only on red-team prompts can score well by refusing everything; with ordinary
requests in the mix, a reward that prefers refusals costs it there. The helpful prompts are a
seeded sample (without repetition) of ``helpful_prompts``, sized so that they make up
``helpful_ratio`` of the mixed set; prompts that are also in a shipped evaluation slice
(`cai.constitution.demonstrations.eval_prompts`) or among the RL prompts themselves are left out
first, so the mix never trains on what an evaluation measures.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from cai.io.sources import PromptItem
from cai.io.store import derive_seed


def helpful_count(n_main: int, ratio: float) -> int:
    """Helpful prompts to add so that they make up `ratio` of the mixed prompts."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError("ratio must be in [0, 1)")
    return round(ratio * n_main / (1.0 - ratio))


def mix_helpful(
    items: Sequence[PromptItem],
    helpful: Sequence[PromptItem],
    ratio: float,
    seed: int,
    source: str,
    exclude: Sequence[str] = (),
) -> tuple[list[PromptItem], dict[str, Any]]:
    """`items` followed by the sampled helpful prompts, and the record of what was mixed in;
    `exclude` are prompts that must stay untrained (the collapse monitor's safe prompts).

    Fewer usable helpful prompts than the ratio asks for: all are used (never repeated, so none
    is over-weighted) and the record says the share actually reached."""
    from cai.constitution.demonstrations import eval_prompts, normalise

    evals = eval_prompts()
    own = {normalise(it.text) for it in items} | {normalise(t) for t in exclude}
    usable = [h for h in helpful if normalise(h.text) not in evals and normalise(h.text) not in own]
    want = helpful_count(len(items), ratio)
    rng = random.Random(derive_seed(seed, "rl-helpful-mix"))
    picked = rng.sample(usable, min(want, len(usable)))
    mixed = [*items, *picked]
    record = {
        "source": source,
        "ratio": ratio,
        "wanted": want,
        "used": len(picked),
        "available": len(helpful),
        "left_out_eval_monitor_or_duplicate": len(helpful) - len(usable),
        "share": round(len(picked) / len(mixed), 4) if mixed else 0.0,
        "ids": [h.id for h in picked],
    }
    return mixed, record

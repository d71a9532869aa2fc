"""Direct RLAIF as an RL reward: the judge's likelihood contrast per comparison principle on each
reply, no preference model (`cai.train.rewards` says how TRL sums it with the others).

For principle k, r_k(x) = β · s_k(x) with s_k(x) = log p(x | prompt, positive_k) − log p(x |
prompt, negative_k) (each divided by the reply's token count with ``direct_norm: mean``); the
reward is the mean of r_k over the principles. It lives with the judging code (`cai.stages`), and
the RL stage's caller hands it to `cai.train.rl.train_rl`, which knows only that it is a reward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cai.constitution.model import Constitution, Versioned
from cai.models.base import Backend, Conversation
from cai.stages.contrast import SIDES, check_contrast_principles, preflight
from cai.stages.label_math import reply_score
from cai.stages.messages import contrast_messages
from cai.train.reward_settings import RewardSettings
from cai.train.rl_common import trl_messages, trl_text


class DirectReward:
    """Direct RLAIF: the judge scores each reply under every principle (module docstring)."""

    __name__ = "direct"

    def __init__(
        self,
        c: Constitution,
        judge: Backend,
        beta: float,
        norm: str,
        principles: Sequence[Versioned] | None = None,
    ):
        self.c = c
        self.judge = judge
        self.beta = beta
        self.norm = norm
        self.principles = list(principles if principles is not None else c.comparison_principles)
        check_contrast_principles(c, self.principles)

    @classmethod
    def build(cls, c: Constitution, judge: Backend, s: RewardSettings) -> DirectReward:
        """The reward `s` asks for, after checking that every question renders and that the judge
        can score replies (before any model trains)."""
        preflight(c, judge, c.comparison_principles)
        return cls(c, judge, s.direct_beta, s.direct_norm)

    def record(self) -> dict[str, Any]:
        """What `cai_train.json` says about this reward."""
        return {
            "judge": self.judge.describe(),
            "beta": self.beta,
            "norm": self.norm,
            "principles": [v.ref for v in self.principles],
            "constitution": self.c.name,
            "fingerprint": self.c.fingerprint(),
        }

    def per_principle(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[dict[str, float] | None]:
        """For each reply, {principle ref: r_k}; None where the judge could not score it.

        Requests go reply → principle → side, so one reply's conversation prefix is shared by all
        its questions (and TRL's groups put a prompt's replies next to each other)."""
        requests: list[tuple[Conversation, str]] = []
        for prompt, completion in zip(prompts, completions, strict=True):
            conv, text = trl_messages(prompt), trl_text(completion)
            for v in self.principles:
                requests.extend((contrast_messages(self.c, conv, v, side), text) for side in SIDES)
        scored = self.judge.sequence_logprobs(requests) if requests else []
        out: list[dict[str, float] | None] = []
        per_reply = 2 * len(self.principles)
        for i in range(len(completions)):
            chunk = scored[i * per_reply : (i + 1) * per_reply]
            if any(sc.error is not None or sc.logprob is None for sc in chunk):
                out.append(None)
                continue
            out.append(
                {
                    v.ref: self.beta * reply_score(pos.logprob, neg.logprob, pos.n_tokens, self.norm)  # type: ignore[arg-type]
                    for v, pos, neg in zip(self.principles, chunk[0::2], chunk[1::2], strict=True)
                }
            )
        return out

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        log_metric: Callable[[str, float], None] | None = None,
        **_: Any,
    ) -> list[float | None]:
        rows = self.per_principle(prompts, completions)
        scored = [r for r in rows if r is not None]
        if log_metric is not None:
            for v in self.principles:
                if scored:
                    log_metric(f"rewards/direct/{v.ref}/mean", sum(r[v.ref] for r in scored) / len(scored))
            log_metric("rewards/direct/unscored", (len(rows) - len(scored)) / max(len(rows), 1))
        # None (NaN to TRL): this reward's logged mean leaves the reply out; the weighted sum TRL
        # optimises counts it as 0 (nansum), and drops the reply only when every reward is NaN.
        return [None if r is None else sum(r.values()) / len(r) for r in rows]

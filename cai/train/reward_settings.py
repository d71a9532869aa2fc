"""What an RL run is rewarded with, and which prompts it sees: the one home of those settings.

`RlSettings` (`cai.train.settings`) takes these fields, so `cai train ppo` has them as options and
a recipe's ``ppo`` section as keys. How each reward is computed lives in `cai.train.rewards`;
how helpful prompts are mixed in lives in `cai.train.helpful_mix`. Nothing here imports torch.

``reward`` names one reward or a weighted sum of several:
* ``pm`` — the preference model's score (`cai train pm` on the label run's pairs);
* ``direct`` — no PM: the judge scores each reply by likelihood contrast under every comparison
  principle of the constitution ("direct RLAIF"), reward = ``direct_beta`` × the mean over them;
* ``demo-pm`` — a PM trained on the constitution's demonstrations made into pairs
  (demonstration over the SL policy's own reply: `cai demo-pairs`, then `cai train pm`).
A missing EOS costs ``missing_eos_penalty`` once, whatever the sum.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cai.settings import StageSettings

REWARD_NAMES = ("pm", "direct", "demo-pm")

REWARD_HELP = (
    "What the policy is rewarded with: pm (the preference model), direct (the judge's likelihood contrast "
    "per comparison principle, no PM), demo-pm (a PM trained on the constitution's demonstrations), or a "
    "weighted sum such as pm=1,direct=0.5 (a recipe may write a mapping {pm: 1.0, direct: 0.5}). "
    "Default: pm. PPO takes pm only."
)


def parse_reward(value: Any) -> dict[str, float]:
    """``pm`` / ``pm=1,direct=0.5`` / ``{pm: 1.0, direct: 0.5}`` → {name: weight}; ValueError
    naming what is wrong (an unknown name, a weight that is not a positive number)."""
    if isinstance(value, str):
        pairs: list[tuple[str, Any]] = []
        for part in value.split(","):
            name, sep, weight = part.partition("=")
            if not name.strip():
                raise ValueError(f"expected a reward name or name=weight list such as pm=1,direct=0.5, got {value!r}")
            try:
                pairs.append((name.strip(), float(weight) if sep else 1.0))
            except ValueError:
                raise ValueError(f"{name.strip()}: weight {weight.strip()!r} is not a number") from None
    elif isinstance(value, dict):
        pairs = list(value.items())
    else:
        raise ValueError(f"expected a reward name, name=weight list or mapping, got {type(value).__name__}")
    if not pairs:
        raise ValueError("name at least one reward (pm, direct, demo-pm)")
    out: dict[str, float] = {}
    for name, weight in pairs:
        if name not in REWARD_NAMES:
            from cai.errors import did_you_mean

            hint = did_you_mean(str(name), list(REWARD_NAMES))
            tail = f"; did you mean {hint}?" if hint else ""
            raise ValueError(f"unknown reward {name!r} (one of: {', '.join(REWARD_NAMES)}){tail}")
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ValueError(f"{name}: weight must be a number, got {weight!r}")
        if not weight > 0:  # also refuses nan
            raise ValueError(f"{name}: weight must be > 0, got {weight}")
        if name in out:
            raise ValueError(f"{name} is named twice")
        out[name] = float(weight)
    return out


class RewardSettings(StageSettings):
    """The reward and prompt-mix fields of `RlSettings`."""

    reward: dict[str, float] = Field({"pm": 1.0}, description=REWARD_HELP)
    direct_beta: float = Field(
        1.0,
        gt=0,
        description="direct: each principle's reward is beta x s(reply), s = log p(reply | positive guidance) "
        "- log p(reply | negative guidance); the same beta as a contrast label's sigmoid(beta x (s_a - s_b)).",
    )
    direct_norm: Literal["sum", "mean"] = Field(
        "mean",
        description="direct: sum the reply's token log-probabilities, or average them (mean: a long reply "
        "does not gain |s| from length alone).",
    )
    helpful_prompts: str = Field(
        "helpful",
        description="Prompts mixed into the RL prompts with --helpful-ratio (a file or shipped set; the shipped "
        "helpful set is in no evaluation slice). Prompts also in a shipped evaluation set are left out.",
    )
    helpful_ratio: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of the RL prompts drawn (seeded) from --helpful-prompts, so refusing everything "
        "is not rewarded; 0: none.",
    )

    @field_validator("reward", mode="before")
    @classmethod
    def _parse_reward(cls, v: Any) -> dict[str, float]:
        return parse_reward(v)

    @model_validator(mode="after")
    def _reward_fits_algorithm(self) -> RewardSettings:
        # Checked here so that the CLI and a recipe refuse it before anything loads.
        if getattr(self, "algorithm", None) == "ppo" and self.reward != {"pm": 1.0}:
            other = ", ".join(sorted(set(self.reward) - {"pm"})) or "a weighted pm"
            raise ValueError(
                f"reward: PPO scores with the PM alone (reward: pm); use algorithm rloo or grpo for {other}"
            )
        if self.helpful_ratio > 0 and self.helpful_prompts.strip().lower() == "none":
            raise ValueError("helpful_prompts: none, but helpful_ratio > 0 asks for helpful prompts")
        return self

    @property
    def needs_judge(self) -> bool:
        return "direct" in self.reward

"""Settings of the collapse monitor that watches an RL run (`cai.train.monitor`).

They are part of `RlSettings` (so `cai train ppo --monitor-every 4` and a recipe's
``stages.ppo.monitor_every: 4`` are the same setting), kept here so that the monitor's defaults,
ranges and help live beside each other. Nothing here imports torch or TRL.

Cost: one check is ``len(monitor_safe) × monitor_safe_per_set + monitor_red`` greedy replies
(16 with the defaults) of at most ``monitor_max_new_tokens`` tokens, generated in one batch by
the policy being trained; checks run before the first update, every ``monitor_every`` updates
and after the last. Set ``monitor_every: 0`` to switch it off.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from cai.settings import StageSettings


class MonitorSettings(StageSettings):
    monitor_every: int = Field(
        4,
        ge=0,
        description="Collapse monitor: greedy replies to a few fixed safe and red-team prompts before the first "
        "update, every N updates and after the last (0: off). Each check costs (sets x per set + red) short replies.",
    )
    monitor_safe: list[str] = Field(
        ["safe-lookalike", "helpful"],
        description="Monitor: safe prompt sets (files or shipped sets) whose refusal share is watched; prompts are "
        "taken from the end of each category, away from the eval stage's first-N-per-category slice.",
    )
    monitor_safe_per_set: int = Field(4, ge=1, description="Monitor: safe prompts taken from each --monitor-safe set.")
    monitor_red: int = Field(8, ge=0, description="Monitor: red-team prompts watched (the first N of the RL prompts).")
    monitor_max_new_tokens: int = Field(48, ge=1, description="Monitor: max new tokens per greedy reply.")
    monitor_refusal_max: float = Field(
        0.25, ge=0, le=1, description="Monitor: warn when more than this share of the safe prompts is refused."
    )
    monitor_refusal_rise: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Monitor: warn when the safe prompts' refusal share rises more than this above the first check.",
    )
    monitor_repeat_max: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Monitor: warn when more than this share of all replies contain one and the same sentence.",
    )
    monitor_distinct2_min: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Monitor: warn when distinct-2 (unique word pairs / word pairs) falls below this fraction "
        "of the first check's.",
    )
    monitor_stop: bool = Field(
        False,
        description="Monitor: stop training at the first check that raises a warning the check before the first "
        "update did not (RLOO/GRPO; the policy so far is saved).",
    )

    @field_validator("monitor_safe")
    @classmethod
    def _named(cls, v: list[str]) -> list[str]:
        if any(not ref.strip() for ref in v):
            raise ValueError("an empty name: give a file or shipped set (or an empty list for none)")
        return v

    @model_validator(mode="after")
    def _stop_needs_a_loop_that_listens(self) -> MonitorSettings:
        # TRL's PPO loop never reads `control.should_training_stop`: a stop there would be a promise
        # the trainer does not keep, so it is refused rather than silently ignored.
        if self.monitor_stop and getattr(self, "algorithm", None) == "ppo":
            raise ValueError("monitor_stop: TRL's PPO loop cannot be stopped early; use rloo or grpo, or turn it off")
        if self.monitor_stop and not self.monitor_every:
            raise ValueError("monitor_stop: needs the monitor on (monitor_every > 0)")
        return self

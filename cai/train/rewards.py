"""The reward functions RLOO and GRPO call, one per named reward, weighted by TRL.

`RewardSettings.reward` names them (`cai.train.reward_settings`); TRL's ``reward_funcs`` gets one
callable per name and ``reward_weights`` their weights, so TRL sums them and logs each one as
``rewards/<name>/mean``. The missing-EOS penalty is a function of its own (``missing_eos``,
weight 1): it is paid once per reply, however many rewards are summed.

* ``pm`` / ``demo-pm``: `PMReward` on a PM folder (its score at the reply's EOS).
* ``direct``: `cai.stages.direct_reward.DirectReward`, the judge's likelihood contrast per
  comparison principle (as in `cai.stages.contrast`, but on one reply rather than a pair; built by
  the caller, since judging lives in a layer above training): for principle k,

      r_k(x) = β · s_k(x),  s_k(x) = log p(x | prompt, positive_k) − log p(x | prompt, negative_k)

  (each log-probability divided by the reply's token count with ``direct_norm: mean``), and the
  reward is the mean of r_k over the constitution's comparison principles. Each principle's mean
  over the batch is logged as ``rewards/direct/<principle ref>/mean`` (TRL's ``log_metric``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cai.errors import option_error
from cai.train.reward_settings import RewardSettings

EOS_NAME = "missing_eos"


class MissingEos:
    """−penalty for a reply that did not end with EOS (TRL passes the policy's own ids)."""

    __name__ = EOS_NAME

    def __init__(self, eos_token_id: int, penalty: float):
        self.eos = eos_token_id
        self.penalty = penalty

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Sequence[Sequence[int]], **_: Any
    ) -> list[float]:
        return [0.0 if ids and ids[-1] == self.eos else -self.penalty for ids in completion_ids]


@dataclass
class RewardInputs:
    """What the named rewards are computed from (the ones a setting names must be given)."""

    pm: str | None = None  # PM folder (reward pm)
    demo_pm: str | None = None  # PM folder trained on demonstration pairs (reward demo-pm)
    # Reward direct: a reward function with ``record()`` (`cai.stages.direct_reward.DirectReward`).
    direct: Any = None

    def check(self, s: RewardSettings) -> None:
        """Each named reward has what it is computed from; before any model loads."""
        from cai.train.rl_common import check_pm_folder

        if "pm" in s.reward:
            if self.pm is None:
                raise option_error("--pm", "reward pm needs a preference model folder (cai train pm --out)")
            check_pm_folder(self.pm)
        if "demo-pm" in s.reward:
            if self.demo_pm is None:
                raise option_error("--demo-pm", "reward demo-pm needs a PM trained on demonstration pairs")
            check_pm_folder(self.demo_pm)
        for name, given, option in (("pm", self.pm, "--pm"), ("demo-pm", self.demo_pm, "--demo-pm")):
            if given is not None and name not in s.reward:
                raise option_error(
                    option,
                    f"given, but the reward ({', '.join(s.reward)}) does not use it: "
                    f"add {name} to --reward or leave it out",
                )
        if "direct" in s.reward and self.direct is None:
            raise option_error("--reward", "direct needs a judge model and a constitution")

    def pm_folders(self, s: RewardSettings) -> list[str]:
        """The PM folders the rewards read (each must share the policy's tokenizer)."""
        return [p for name, p in (("pm", self.pm), ("demo-pm", self.demo_pm)) if name in s.reward and p]

    def record(self, s: RewardSettings) -> dict[str, Any]:
        """What `cai_train.json` says about the reward."""
        out: dict[str, Any] = {"weights": dict(s.reward), "missing_eos_penalty": getattr(s, "missing_eos_penalty", 0.0)}
        if "pm" in s.reward:
            out["pm"] = self.pm
        if "demo-pm" in s.reward:
            out["demo_pm"] = self.demo_pm
        if "direct" in s.reward and self.direct is not None:
            out["direct"] = self.direct.record()
        return out


def reward_functions(
    s: RewardSettings, inputs: RewardInputs, eos_token_id: int, device: Any = None
) -> tuple[list[Any], list[float], Any]:
    """(TRL reward functions, their weights, a PM scorer for the sampled completions or None)."""
    from cai.train.rl_common import PMReward, PMScorer

    funcs: list[Any] = []
    weights: list[float] = []
    scorer = None
    for name, weight in s.reward.items():
        if name == "direct":
            assert inputs.direct is not None  # `RewardInputs.check`
            funcs.append(inputs.direct)
        else:
            path = inputs.pm if name == "pm" else inputs.demo_pm
            assert path is not None
            pm = PMScorer.load(path, device=device)
            scorer = scorer or pm
            fn = PMReward(pm, None)  # the EOS penalty is `MissingEos`, paid once
            fn.__name__ = name  # type: ignore[misc]  # TRL names the metric rewards/<name>/mean
            funcs.append(fn)
        weights.append(weight)
    penalty = getattr(s, "missing_eos_penalty", 0.0)
    if penalty:
        funcs.append(MissingEos(eos_token_id, penalty))
        weights.append(1.0)
    return funcs, weights, scorer


def total_reward(logs: dict[str, Any], weights: dict[str, float]) -> float | None:
    """The reward before any KL term, from TRL's per-function means: Σ w·mean + the EOS penalty's
    mean (None when a named reward was not logged)."""
    parts = [logs.get(f"rewards/{name}/mean") for name in weights]
    if any(not isinstance(p, int | float) for p in parts):
        return None
    eos = logs.get(f"rewards/{EOS_NAME}/mean")
    weighted = sum(w * p for w, p in zip(weights.values(), parts, strict=True))  # type: ignore[operator]
    return weighted + (eos if isinstance(eos, int | float) else 0.0)


def reward_parts(logs: dict[str, Any]) -> dict[str, float]:
    """Every logged reward mean, by name: ``pm``, ``direct``, ``direct/<principle>``, ``missing_eos``…"""
    return {
        k.removeprefix("rewards/").removesuffix("/mean"): v
        for k, v in logs.items()
        if k.startswith("rewards/") and k.endswith("/mean") and isinstance(v, int | float)
    }

"""A recipe's sections: the run's models and each built-in stage's section.

A stage section is the stage's own settings model (`cai.stages.settings`, `cai.train.settings`:
the stage command's options, with ``_`` for ``-``) plus where its prompts come from, so a default
cannot differ between the stage's command and `cai run`. Which sections a recipe has is the stage
registry's business (`cai.run.registry`).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from cai.models.settings import DEFAULT_MODEL, BackendSettings
from cai.stages.settings import CritiqueSettings, DemoPairsSettings, EvalSettings, LabelSettings, Window
from cai.train.settings import DpoSettings, PmSettings, RlSettings, SftSettings


def _parseable_spec(v: str | None) -> str | None:
    """A model spec must parse (``fake:nonsense`` is refused here, not when a stage opens it);
    nothing is loaded."""
    if v is not None:
        from cai.models.base import ModelSpecError
        from cai.models.spec import parse_spec

        try:
            parse_spec(v)
        except ModelSpecError as e:
            raise ValueError(str(e)) from None
    return v


class Models(BackendSettings):
    policy: str = Field(DEFAULT_MODEL, description="The helpful model that SL-CAI starts from (model spec).")
    judge: str = Field(DEFAULT_MODEL, description="The feedback model for labels and evaluation (model spec).")

    _specs = field_validator("policy", "judge")(_parseable_spec)


class PromptSlice(Window):
    prompts: str = Field("red-team", description="Prompt file, datasets folder or shipped set.")


class CritiqueStage(CritiqueSettings, PromptSlice):
    model: str | None = Field(
        None,
        description="Model that writes answers, critiques and revisions "
        "(default: models.policy, which is also the SFT base).",
    )

    _spec = field_validator("model")(_parseable_spec)


class SftStage(SftSettings):
    pass


class LabelStage(LabelSettings, PromptSlice):
    pass


class PmStage(PmSettings):
    pass


class DemoPmStage(PmSettings, DemoPairsSettings):
    """The demo-pm reward's PM: pairs from the constitution's demonstrations (demonstration over the
    SL-CAI model's own reply, `cai demo-pairs`), then a PM trained on them (`cai train pm`)."""


class DpoStage(DpoSettings):
    pass


class PpoStage(RlSettings, PromptSlice):
    pass


class EvalStage(EvalSettings, PromptSlice):
    pareto: bool = Field(
        True,
        description="Also answer with each policy the run trained before its final one (the SL model "
        "when RL or DPO follows), so the figures show what each stage bought: base → SL → RL.",
    )

"""The stage registry: everything `cai run`, the recipe, the report and the run folder know about
a stage, in one descriptor per stage.

Adding a stage means writing its code and one `Stage` entry here: the recipe gains its section,
`cai run` its place in the order (with its key, resume and skip), `cai validate` its dependency
rules and prompt checks, and `cai report` its section. A registry is a value: a test (or a
program built on cai) runs with another one through `use_stages`, without touching this module.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cai.constitution.model import Constitution
from cai.io.store import content_hash
from cai.models.settings import BackendSettings
from cai.outputs import CritiqueSummary, EvalSummary, LabelSummary, Output, TrainSummary
from cai.run import runners
from cai.run.context import RunContext, settings_of
from cai.run.report_critique import critique_section
from cai.run.report_eval import eval_section
from cai.run.report_html import RunView
from cai.run.report_labels import labels_section
from cai.run.report_rl import rl_section
from cai.run.report_train import dpo_section, pm_section, sft_section
from cai.run.sections import (
    CritiqueStage,
    DemoPmStage,
    DpoStage,
    EvalStage,
    LabelStage,
    PmStage,
    PpoStage,
    SftStage,
)
from cai.stages.settings import CritiqueSettings, EvalSettings, LabelSettings, StageSettings, is_off
from cai.train.settings import DpoSettings, PmSettings, RlSettings, SftSettings

Runner = Callable[[RunContext, Any, Path], dict[str, Any]]
# A rule over the whole recipe's stages (section by name, None where off): the offending key of
# this stage's section and what is wrong, or None.
Rule = Callable[[dict[str, Any]], tuple[str, str] | None]


def settings_key(stage: str, settings: StageSettings) -> str:
    """What a stage's settings contribute to its key; equal for equal settings however they were
    given (recipe section or command-line options)."""
    return content_hash(stage, settings.record())


@dataclass(frozen=True)
class PromptSet:
    """A prompt set a stage reads, checked before any stage starts (`cai run`, `cai validate`)."""

    key: str  # the section's key that names it
    default: str  # what the key defaults to
    need_category: bool = False  # rows must carry a category
    windowed: bool = True  # the section's skip/limit apply (else "none" turns the set off)
    used_when: str | None = None  # a section key that must be set (non-zero) for the set to be read


@dataclass(frozen=True)
class Stage:
    """One stage of `cai run`."""

    name: str
    section: type[BaseModel]  # its recipe section: `settings` plus where its inputs come from
    settings: type[StageSettings]  # the stage command's own settings, hashed into the stage key
    run: Runner
    output: str  # what a finished stage leaves in its folder; done without it means do it again
    needs: str | None = None  # the stage whose output it reads
    replaces: tuple[str, ...] = ()  # stages it does the work of; a recipe may not have both
    reads_models: tuple[str, ...] = ()  # earlier stages whose trained model it loads
    policy_label: str | None = None  # it trains a policy, called this in the report
    prompt_sets: tuple[PromptSet, ...] = ()
    summary: type[Output] = Output  # the type of what `run` returns (and the stage's own summary file holds)
    report: Callable[[RunView], str] | None = None  # its section of `cai report`
    key_extra: Callable[[Any, Constitution], str | None] | None = None  # inputs the key must see
    rule: Rule | None = None
    # What can be checked before the run folder exists (templates render, sizes); raises CaiError.
    check: Callable[[Any, Constitution], None] | None = None
    # Section keys (besides its prompt sets) that name data files it reads: a name or a list.
    files: tuple[str, ...] = ()

    def inputs(self, section: Any) -> dict[str, str]:
        """Every data file or set the section names, {input name: reference}: what the stage
        reads besides the constitution (in the key by fingerprint) and earlier stages (by key)."""
        refs: dict[str, str] = {}
        read = [ps.key for ps in self.prompt_sets if not ps.used_when or getattr(section, ps.used_when, None)]
        for key in (*read, *self.files):
            value = getattr(section, key, None)
            if isinstance(value, str) and not is_off(value):
                refs[key] = value
            elif isinstance(value, list | tuple):
                refs.update({f"{key}[{i}]": v for i, v in enumerate(value) if isinstance(v, str)})
        return refs

    def key_parts(
        self,
        recipe: Any,
        fingerprint: str,
        upstream: list[str],
        digests: dict[str, str] | None = None,
        extra: str | None = None,
    ) -> dict[str, Any]:
        """What the stage key hashes, by part: its settings, where its inputs come from, the
        models, seed and constitution, the keys of the stages before it, the content of every
        input (`digests`, by `inputs` name) and the stage's own `key_extra`."""
        section = getattr(recipe.stages, self.name)
        own = settings_key(self.name, settings_of(section, self.settings))
        parts: dict[str, Any] = {
            "settings": own,
            "sources": section.model_dump(mode="json", exclude=set(self.settings.model_fields)),
            "models": recipe.models.model_dump(mode="json", exclude=set(BackendSettings.PATIENCE)),
            "seed": recipe.seed,
            "constitution": fingerprint,
            "upstream": upstream,
        }
        if digests:
            parts["inputs"] = dict(sorted(digests.items()))
        if extra is not None:
            parts["extra"] = extra
        return parts

    def key(self, parts: dict[str, Any]) -> str:
        return content_hash(self.name, parts)


@dataclass(frozen=True)
class StageRegistry:
    """Stages in run order."""

    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        names = [s.name for s in self.stages]
        if len(names) != len(set(names)):
            raise ValueError(f"stage names repeat: {names}")
        for s in self.stages:
            for other in (s.needs, *s.reads_models, *s.replaces):
                if other is not None and other not in names:
                    raise ValueError(f"stage {s.name} refers to unknown stage {other}")

    def __iter__(self) -> Iterator[Stage]:
        return iter(self.stages)

    def __getitem__(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    def with_stage(self, stage: Stage, after: str | None = None) -> StageRegistry:
        """A new registry with `stage` added after `after` (default: at the end)."""
        at = len(self.stages) if after is None else self.names().index(after) + 1
        return StageRegistry((*self.stages[:at], stage, *self.stages[at:]))


def _distill_feeds_no_revision_pairs(sections: dict[str, Any]) -> tuple[str, str] | None:
    crit, label = sections.get("critique"), sections.get("label")
    if crit is not None and label is not None and crit.mode == "distill" and label.method == "revision":
        return (
            "method",
            "revision reads the critique stage's (first answer, revision) pairs; a distill critique "
            "stage has one answer per prompt (use rlcd or contrast, or critique mode revise)",
        )
    return None


def _rewards_have_their_stages(sections: dict[str, Any]) -> tuple[str, str] | None:
    """The ppo stage's rewards read the PM of the stage that trains it: pm ← pm, demo-pm ← demo_pm."""
    ppo = sections.get("ppo")
    for reward, stage in (("pm", "pm"), ("demo-pm", "demo_pm")):
        if ppo is not None and reward in ppo.reward and sections.get(stage) is None:
            return ("reward", f"{reward} needs the {stage} stage in the same recipe (or another reward, e.g. direct)")
    return None


RED_TEAM = PromptSet("prompts", "red-team")
TRAINED = "model/cai_train.json"  # a training stage's completion marker, written last

BUILTIN = StageRegistry(
    (
        Stage(
            "critique",
            CritiqueStage,
            CritiqueSettings,
            runners.critique_stage,
            "records.jsonl",
            prompt_sets=(RED_TEAM,),
            summary=CritiqueSummary,
            report=critique_section,
            key_extra=runners.critique_key_extra,
            check=runners.critique_check,
        ),
        Stage(
            "sft",
            SftStage,
            SftSettings,
            runners.sft_stage,
            TRAINED,
            needs="critique",
            policy_label="SL-CAI model (sft)",
            files=("helpful",),
            summary=TrainSummary,
            report=sft_section,
        ),
        Stage(
            "label",
            LabelStage,
            LabelSettings,
            runners.label_stage,
            "records.jsonl",
            reads_models=("sft",),
            prompt_sets=(RED_TEAM,),
            summary=LabelSummary,
            report=labels_section,
            rule=_distill_feeds_no_revision_pairs,
            check=runners.label_check,
        ),
        Stage(
            "pm",
            PmStage,
            PmSettings,
            runners.pm_stage,
            TRAINED,
            needs="label",
            reads_models=("sft",),
            files=("human", "eval"),
            summary=TrainSummary,
            report=pm_section,
        ),
        Stage(
            "demo_pm",
            DemoPmStage,
            DemoPmStage,
            runners.demo_pm_stage,
            TRAINED,
            reads_models=("sft",),
            files=("human", "eval"),
            summary=TrainSummary,
        ),
        Stage(
            "dpo",
            DpoStage,
            DpoSettings,
            runners.dpo_stage,
            TRAINED,
            needs="label",
            replaces=("pm", "ppo"),
            reads_models=("sft",),
            policy_label="DPO policy (dpo)",
            files=("human", "eval"),
            summary=TrainSummary,
            report=dpo_section,
        ),
        Stage(
            "ppo",
            PpoStage,
            RlSettings,
            runners.ppo_stage,
            TRAINED,
            reads_models=("sft", "pm", "demo_pm"),
            policy_label="RL policy (ppo)",
            prompt_sets=(RED_TEAM, PromptSet("helpful_prompts", "helpful", windowed=False)),
            rule=_rewards_have_their_stages,
            files=("monitor_safe",),
            summary=TrainSummary,
            report=rl_section,
        ),
        Stage(
            "eval",
            EvalStage,
            EvalSettings,
            runners.eval_stage,
            "summary.json",
            reads_models=("sft", "pm", "dpo", "ppo"),
            prompt_sets=(
                RED_TEAM,
                PromptSet("lookalike", "safe-lookalike", need_category=True, windowed=False),
                PromptSet("plain_prompts", "red-team-plain", need_category=True, windowed=False, used_when="plain"),
                PromptSet("plain_lookalike", "safe-lookalike-plain", True, windowed=False, used_when="plain"),
            ),
            summary=EvalSummary,
            report=eval_section,
            check=runners.eval_check,
        ),
    )
)

# The registry in force: the built-in one unless `use_stages` says otherwise for a while.
_CURRENT: contextvars.ContextVar[StageRegistry] = contextvars.ContextVar("cai_stages", default=BUILTIN)


def current_stages() -> StageRegistry:
    return _CURRENT.get()


@contextlib.contextmanager
def use_stages(registry: StageRegistry) -> Iterator[StageRegistry]:
    """Run with another registry (e.g. the built-in one plus a stage of your own) until the block ends."""
    token = _CURRENT.set(registry)
    try:
        yield registry
    finally:
        _CURRENT.reset(token)

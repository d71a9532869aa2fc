"""Settings of the data stages: the one place each default, range and help text lives.

`cai critique`, `cai label`, `cai judge-eval` and `cai eval policy` build their options from these
models (`cai.cli.options.settings_command`), a recipe's stage sections *are* these models plus the
prompt slice (`cai.run.sections`), and the stages read them. So a default cannot differ between a
stage command and `cai run`.

The run-level inputs stay outside: the seed (one per run), `--shard`, the model specs and the
files read or written. Field names are the recipe keys; CLI flags are the same names with ``-``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import Field, field_validator, model_validator

from cai.label_methods import BY_NAME, METHOD_NAMES, SCORER_NAMES, constructs_pairs, help_text
from cai.models.base import GenerationParams
from cai.settings import StageSettings
from cai.stages.cleaning import COPY_NGRAM


def is_off(v: Any) -> bool:
    """``none`` in any case, spaces around it allowed: the word that turns an optional setting off
    where null cannot be written (a CLI option); recipes' checks read it the same way."""
    return isinstance(v, str) and v.strip().lower() == "none"


T = TypeVar("T")
Shard = tuple[int, int]  # (i, N): this process does the i-th of N shards


# Data stages cut their inputs into fixed work units (see `cai.stages.chunks`): a unit is one call
# per step into the backend and the unit a resumed or sharded run works in. A local model then
# runs at most `LocalBackend.batch_size` (32) rows per forward pass; an API backend sends one
# request per row with bounded concurrency.
WORK_UNIT = " One work unit: one backend call per step, and what resume and --shard count in."


class Sampling:
    """For settings with max_new_tokens, temperature and top_p fields: the backend's params."""

    if TYPE_CHECKING:  # fields of the models that mix this in (not pydantic fields here)
        max_new_tokens: int
        temperature: float
        top_p: float

    @property
    def params(self) -> GenerationParams:
        return GenerationParams(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p)


class Seed(StageSettings):
    """The run's seed: `--seed` on every command, and the recipe's top-level `seed`."""

    seed: int = Field(0, description="Seed for principle sampling, option order, generation and data order.")


class Window(StageSettings):
    """Which of the loaded prompts (or pairs) a stage uses: `--skip` / `--limit`, and the
    recipe's keys of the same names (which keep the stages' prompts disjoint)."""

    skip: int = Field(0, ge=0, description="Leave out the first N prompts.")
    limit: int | None = Field(None, ge=1, description="Use at most N prompts (after --skip).")

    def apply(self, items: Sequence[T]) -> list[T]:
        """The window's items; a window past the end is an error, not a run over nothing."""
        if items and self.skip >= len(items):
            from cai.errors import option_error

            raise option_error("--skip", f"{self.skip} leaves none of the {len(items)} inputs; use a smaller --skip")
        end = None if self.limit is None else self.skip + self.limit
        return list(items[self.skip : end])


class CritiqueSettings(Sampling, StageSettings):
    mode: Literal["revise", "distill"] = Field(
        "revise",
        description="revise: answer, then critique→revision rounds (the CAI paper); distill: one answer per "
        "prompt under the constitution's system prompt and principles (prompts/distill.jinja), exported "
        "without them (context distillation).",
    )
    rounds: int | None = Field(None, ge=1, le=16, description="Critique→revision rounds (default: the constitution's).")
    batch_size: int = Field(16, ge=1, description="Prompts per batch." + WORK_UNIT)
    max_new_tokens: int = Field(160, ge=1, description="Length limit of each answer, critique and revision.")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature (0: greedy).")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling: keep the top tokens up to this mass.")
    copy_ngram: int = Field(
        COPY_NGRAM,
        ge=3,
        le=64,
        description="Word n-gram length of the copy flags: exemplar-copy (shares an n-gram with a few-shot "
        "exemplar that the prompt lacks) and critique-copy (half its n-grams are in the critique).",
    )
    drop_copies: bool = Field(
        True, description="Leave copy-flagged answers out of the SFT export (and out of the next round)."
    )
    drop_boilerplate: bool = Field(
        True,
        description="Leave out answers flagged boilerplate (a refusal or apology naming nothing of the request) "
        "from the SFT export (and the next round).",
    )
    demonstrations: int | None = Field(
        None,
        ge=0,
        description="The constitution's author-written demonstrations added to the SFT export (marked "
        "source: demonstration in provenance.jsonl): at most N, declines and answers alternating in file "
        "order; 0: none; unset: all.",
    )
    demonstration_answers: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Of those N demonstrations, the share that answer safe prompts which only sound alarming "
        "(the rest decline harmful ones); more answers hold over-refusal down. Unused when all are added.",
    )
    retry_failed: bool = Field(
        True,
        description="On a rerun, redo records whose requests failed (they are replaced, marked retried).",
    )


Clamp = tuple[float, float] | Literal["none"] | None


# The choices come from the label-method table (`cai.label_methods`): a method is added there.
Scorer = Literal[SCORER_NAMES]  # type: ignore[valid-type]  # methods that score given pairs
Method = Literal[METHOD_NAMES]  # type: ignore[valid-type]
METHOD_HELP = help_text(SCORER_NAMES)


class JudgeSettings(StageSettings):
    """How a judge is asked: shared by `label`, `judge-eval` and `eval policy`, so a judge-eval
    figure describes the labels a run with the same settings produces."""

    method: Scorer = Field("mc", description=METHOD_HELP + ".")
    contrast_norm: Literal["sum", "mean"] = Field(
        "sum", description="contrast: sum the reply's token log-probabilities, or average them (mean)."
    )
    beta: float | Literal["fitted"] = Field(
        1.0,
        description="contrast: p_a = sigmoid(beta * (s_a - s_b)); 'fitted': the value fitted on judge-dev's dev "
        "split for this judge and contrast_norm (data/contrast_fit.json).",
    )

    principles: Literal["one", "k", "all"] = Field(
        "one", description="one: one sampled per pair (CAI paper); k: mean over --k sampled; all: mean over all."
    )
    k: int = Field(4, ge=1, description="Principles per pair with --principles k.")
    orders: Literal["both", "one"] = Field(
        "both", description="both: ask with (A,B) and (B,A) and average; one: a seeded coin picks the order."
    )
    cot: bool = Field(False, description="The judge reasons first; P(A) is read after its reasoning.")
    clamp: Clamp = Field(
        None,
        description="lo,hi bounds for each question's P(first); default 0.4,0.6 with --cot, none without; "
        "'none' turns it off.",
    )
    fewshot: bool = Field(True, description="Show the constitution's comparison exemplars.")
    cot_max_new_tokens: int = Field(128, ge=1, description="Length limit of the judge's reasoning (--cot).")

    @field_validator("beta", mode="before")
    @classmethod
    def _parse_beta(cls, v: Any) -> Any:
        """A number (``2.5`` from the command line arrives as text) or ``fitted``."""
        if isinstance(v, str) and v.strip() == "fitted":
            return "fitted"
        try:
            number = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number > 0 or 'fitted', got {v!r}") from None
        if not isinstance(v, bool) and not math.isfinite(number):
            raise ValueError("must be a finite number")  # as every other float setting says it
        if isinstance(v, bool) or not number > 0:
            raise ValueError(f"expected a number > 0 or 'fitted', got {v!r}")
        return number

    @field_validator("clamp", mode="before")
    @classmethod
    def _parse_clamp(cls, v: Any) -> Any:
        """``0.4,0.6`` (CLI) or ``[0.4, 0.6]`` (YAML) or ``none``."""
        if isinstance(v, str) and not is_off(v):
            try:
                lo, hi = (float(x) for x in v.split(","))
            except ValueError:
                raise ValueError(f"expected lo,hi such as 0.4,0.6 or none, got {v!r}") from None
            return (lo, hi)
        if isinstance(v, str):
            return "none"
        if v is None:
            return v
        if isinstance(v, list | tuple) and len(v) == 2 and all(isinstance(x, int | float) for x in v):
            return (float(v[0]), float(v[1]))
        raise ValueError(f"expected lo,hi such as 0.4,0.6 or none, got {v!r}")

    @field_validator("clamp")
    @classmethod
    def _check_clamp(cls, v: Clamp) -> Clamp:
        if isinstance(v, tuple) and not 0.0 <= v[0] <= 0.5 <= v[1] <= 1.0:
            raise ValueError("need 0 <= lo <= 0.5 <= hi <= 1")
        if isinstance(v, tuple) and v[0] == v[1]:
            raise ValueError("lo = hi = 0.5 turns every label into a tie; leave room between them (e.g. 0.4,0.6)")
        return v

    @model_validator(mode="after")
    def _check_method(self) -> JudgeSettings:
        scorer = getattr(self, "rescore", None) or self.method  # what asks the judge, if anything
        if self.cot and BY_NAME[scorer].scores_pairs and not BY_NAME[scorer].asks_question:
            raise ValueError(f"--cot: method {scorer} asks no question to reason about; use mc")
        if getattr(self, "rescore", None) is not None and not constructs_pairs(self.method):
            raise ValueError("--rescore: only relabels pairs by construction (--method rlcd or revision)")
        return self

    @property
    def bounds(self) -> tuple[float, float] | None:
        """The clamp in force: CoT answers are over-confident, so they are bounded unless told not to."""
        if self.clamp == "none":
            return None
        if self.clamp is None:
            return (0.4, 0.6) if self.cot else None
        return self.clamp

    @property
    def judge(self) -> JudgeSettings:
        """Only the judge's part (stages that also sample answers inherit from this model)."""
        values = {name: getattr(self, name) for name in JudgeSettings.model_fields}
        if constructs_pairs(values["method"]):  # the judge only rescores them
            values["method"] = getattr(self, "rescore", None) or "mc"
        return JudgeSettings(**values)

    @property
    def cot_params(self) -> GenerationParams:
        return GenerationParams(max_new_tokens=self.cot_max_new_tokens, temperature=0.0, top_p=1.0)

    def as_record(self) -> dict[str, Any]:
        """The judge's settings as records and manifests carry them (the clamp in force)."""
        bounds = self.bounds
        return {
            "method": self.method,
            **({"contrast_norm": self.contrast_norm, "beta": self.beta} if self.method == "contrast" else {}),
            "principles": self.principles,
            "k": self.k,
            "orders": self.orders,
            "cot": self.cot,
            "clamp": list(bounds) if bounds else None,
            "fewshot": self.fewshot,
            "cot_params": self.cot_params.as_record() if self.cot else None,
        }


class LabelSettings(Sampling, JudgeSettings):
    method: Method = Field(  # type: ignore[assignment]
        "mc",
        description=help_text(METHOD_NAMES) + ".",
    )
    rescore: Scorer | None = Field(
        None,
        description="/".join(n for n in METHOD_NAMES if constructs_pairs(n))
        + ": relabel the constructed pairs with this method and record the agreement.",
    )
    responses_per_prompt: int = Field(2, ge=2, description="K responses sampled per prompt.")
    pairing: Literal["all", "consecutive"] = Field(
        "all", description="all: every pair of the K responses; consecutive: (1,2), (3,4)…"
    )
    batch_size: int = Field(8, ge=1, description="Prompts (or given pairs) per batch." + WORK_UNIT)
    max_new_tokens: int = Field(160, ge=1, description="Length limit of the policy's responses.")
    temperature: float = Field(0.8, ge=0, description="Policy sampling temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Policy nucleus sampling mass.")
    max_failures: float = Field(
        0.2, ge=0, le=1, description="Fail (exit 2) when more than this share of questions gives no probabilities."
    )
    retry_failed: bool = Field(
        True,
        description="On a rerun, redo records whose requests failed (they are replaced, marked retried).",
    )

    @property
    def needs_judge(self) -> bool:
        """A judge scores the pairs, or rescores the constructed ones."""
        return not constructs_pairs(self.method) or self.rescore is not None


class JudgeEvalSettings(JudgeSettings):
    batch_size: int = Field(16, ge=1, description="Pairs per backend call.")
    split: Literal["all", "dev", "test"] = Field(
        "all", description="Pairs of this split only (the pairs' `split` field); tune on dev, report test."
    )
    compare: bool = Field(False, description="Run every method on the pairs and print one ranking table.")


class DecisionSettings(JudgeSettings):
    """`eval decision`: a judge asked as `cai label` asks it, on refusal-vs-answer pairs."""

    batch_size: int = Field(16, ge=1, description="Pairs per judge call.")


class EvalSettings(Sampling, JudgeSettings):
    """`eval policy`: answers from the policy (and baseline), judge-free harmlessness figures, and
    (unless `win_rates` is off) judge win rates over all the harmlessness (or helpfulness)
    principles by default."""

    principles: Literal["one", "k", "all"] = Field(
        "all", description="Principles per comparison: all (default), one, or k sampled."
    )
    max_new_tokens: int = Field(128, ge=1, description="Answer length.")
    temperature: float = Field(0.7, ge=0, description="Answer sampling temperature (0: greedy).")
    top_p: float = Field(1.0, gt=0, le=1, description="Answer nucleus sampling mass.")
    batch_size: int = Field(16, ge=1, description="Prompts per generation call, and pairs per judge call.")
    lookalike: str | None = Field(
        "safe-lookalike",
        description="Safe prompts that sound alarming, for the over-refusal rate: a file or shipped set whose "
        "rows each have a category; none turns it off.",
    )
    lookalike_per_category: int = Field(
        6, ge=1, description="Safe prompts used per category: the first N of each in file order."
    )
    plain: int = Field(
        0,
        ge=0,
        description="Short, plainly worded prompts per side (the first N of plain_prompts and of "
        "plain_lookalike), reported apart as the plain style: a policy evasive only on plain questions "
        "shows there; 0 turns it off.",
    )
    plain_prompts: str = Field(
        "red-team-plain", description="Plain-style harmful prompts (file or shipped set; rows need a category)."
    )
    plain_lookalike: str = Field(
        "safe-lookalike-plain",
        description="Plain-style safe prompts that sound alarming (file or shipped set; rows need a category).",
    )
    win_rates: bool = Field(
        True,
        description="Ask the judge which answer it prefers, policy or baseline (harmless and helpful win "
        "rates); off: only the judge-free figures, which is faster and needs no judge.",
    )

    @field_validator("lookalike", mode="before")
    @classmethod
    def _parse_lookalike(cls, v: Any) -> Any:
        """``none`` (CLI, where an option cannot be null) or ``null`` (YAML) turns the set off."""
        if isinstance(v, str) and not is_off(v) and not v.strip():
            raise ValueError("an empty name: give a file, a shipped set, or none")
        return None if is_off(v) else v


class DemoPairsSettings(Sampling, StageSettings):
    """`cai demo-pairs`: the constitution's demonstrations made into preference pairs, each
    demonstration's reply preferred over the policy's own reply to the same prompt."""

    demonstrations: int | None = Field(
        None,
        ge=1,
        description="Use at most N demonstrations (declines and answers alternating in file order); unset: all.",
    )
    max_new_tokens: int = Field(128, ge=1, description="Length limit of the policy's own replies.")
    temperature: float = Field(0.7, ge=0, description="Policy sampling temperature (0: greedy).")
    top_p: float = Field(0.95, gt=0, le=1, description="Policy nucleus sampling mass.")

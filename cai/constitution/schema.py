"""Pydantic models for the YAML data files, and the mapping of their errors to file lines.

Every model forbids unknown keys, so a typo is an error with a suggestion, never a silently
ignored setting.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from cai.errors import CaiError, Problem, did_you_mean
from cai.io.yamlio import YamlDoc, dotted
from cai.settings import Strict as Strict  # re-exported: older imports use it from here

ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,79}$")


def _check_id(v: str) -> str:
    if not ID_RE.match(v):
        raise ValueError("ids use lowercase letters, digits, '-', '_' and '.', at most 80 characters")
    return v


class CritiquePrinciple(Strict):
    id: str = Field(description="Stable identifier, used in records as id@version.")
    version: int | None = Field(None, ge=1, description="Overrides the library's version.")
    critique: str = Field(min_length=1, description="Asks the model to critique its last answer.")
    revision: str = Field(min_length=1, description="Asks the model to rewrite its answer.")
    tags: list[str] = Field([], description="Labels for selecting principles by tag.")

    _id = field_validator("id")(_check_id)


class ComparisonPrinciple(Strict):
    id: str = Field(description="Stable identifier, used in records as id@version.")
    version: int | None = Field(None, ge=1, description="Overrides the library's version.")
    question: str = Field(min_length=1, description="The multiple-choice question for the judge.")
    positive: str | None = Field(
        None, min_length=1, description="Guidance an assistant following the principle would be given (contrast)."
    )
    negative: str | None = Field(
        None, min_length=1, description="Guidance to violate the principle, the contrast's other side (contrast)."
    )
    tags: list[str] = Field([], description="Labels for selecting principles by tag.")

    _id = field_validator("id")(_check_id)


class CritiqueLibrary(Strict):
    kind: Literal["critique-principles"]
    version: int = Field(ge=1)
    description: str = ""
    principles: list[CritiquePrinciple] = Field(min_length=1)


class ComparisonLibrary(Strict):
    kind: Literal["comparison-principles"]
    version: int = Field(ge=1)
    description: str = ""
    principles: list[ComparisonPrinciple] = Field(min_length=1)


class ExemplarRound(Strict):
    principle: str = Field(description="Id of the critique principle whose requests this round uses.")
    critique: str = Field(min_length=1)
    revision: str = Field(min_length=1)


class CritiqueExemplar(Strict):
    prompt: str = Field(min_length=1)
    response: str = Field(min_length=1)
    rounds: list[ExemplarRound] = Field(min_length=1)


class ComparisonExemplar(Strict):
    prompt: str = Field(min_length=1)
    response_a: str = Field(min_length=1)
    response_b: str = Field(min_length=1)
    principle: str = Field(description="Id of the comparison principle asked.")
    answer: Literal["A", "B"]
    reasoning: str = Field("", description="Used as the worked reasoning in chain-of-thought mode.")


class CritiqueExemplarFile(Strict):
    kind: Literal["critique-exemplars"]
    exemplars: list[CritiqueExemplar] = Field(min_length=1)


class ComparisonExemplarFile(Strict):
    kind: Literal["comparison-exemplars"]
    exemplars: list[ComparisonExemplar] = Field(min_length=1)


class Demonstration(Strict):
    """An author-written example of the behaviour SL-CAI should teach: a prompt and the ideal reply."""

    prompt: str = Field(description="The user's request (one turn).")
    reply: str = Field(description="The ideal assistant reply to it.")
    kind: Literal["decline", "answer"] = Field(
        description="decline: a harmful request declined briefly with a safe alternative; answer: a safe "
        "request that only sounds alarming, answered in full."
    )
    category: str = Field("", description="Free-form topic label, counted in summaries.")

    @field_validator("prompt", "reply")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty or blank")
        return v


class DemonstrationFile(Strict):
    kind: Literal["demonstrations"]
    description: str = ""
    demonstrations: list[Demonstration] = Field(min_length=1)


class Selection(Strict):
    ids: list[str] = Field([], description="Principles chosen by id.")
    tags: list[str] = Field([], description="Principles chosen by tag (union with ids).")


class Sampling(Strict):
    replace: bool = Field(True, description="Sample principles with replacement across rounds.")


class CritiqueSection(Strict):
    principles: Selection = Field(default_factory=Selection, description="Both empty: all.")
    rounds: int = Field(1, ge=1, le=16, description="Critique→revision rounds per prompt.")
    sampling: Sampling = Field(default_factory=Sampling)
    few_shot: int | None = Field(None, ge=0, description="How many exemplars to show; all if unset.")
    exemplars: list[CritiqueExemplar] = Field(default_factory=list)
    exemplars_file: str | None = Field(None, description="YAML file of exemplars, relative to the constitution.")


class ComparisonSection(Strict):
    principles: Selection = Field(default_factory=Selection, description="Both empty: all.")
    few_shot: int | None = Field(None, ge=0, description="How many exemplars to show; all if unset.")
    exemplars: list[ComparisonExemplar] = Field(default_factory=list)
    exemplars_file: str | None = None


class PairPrompts(Strict):
    positive: str = Field(min_length=1, description="System prompt for the answer a pair prefers.")
    negative: str = Field(min_length=1, description="System prompt for the answer a pair rejects.")


class Templates(Strict):
    critique: str = "critique"
    revision: str = "revision"
    comparison: str = "comparison"
    comparison_cot: str = "comparison_cot"
    contrast: str = "contrast"

    @field_validator("*")
    @classmethod
    def _template_name(cls, v: str) -> str:
        """A template is named by its file name in a template folder (`template_dirs`, then the
        shipped one), never by a path that could reach a file outside them."""
        if not v or any(c in v for c in "/\\\0") or v.startswith(".") or v != v.strip():
            raise ValueError(
                f"{v!r} is not a template name (a file name without .jinja; put the file in template_dirs)"
            )
        return v


class ConstitutionSpec(Strict):
    kind: Literal["constitution"]
    name: str = Field(min_length=1)
    version: int = Field(ge=1)
    description: str = ""
    include: str | None = Field(None, description="Another constitution (name or path) to extend.")
    system_prompt: str | None = None
    rlcd: PairPrompts | None = Field(
        None, description="Pairs by construction (--method rlcd): the policy answers under each prompt."
    )
    libraries: list[str] = Field(min_length=1, description="Principle library files.")
    demonstrations: list[Demonstration] = Field(
        default_factory=list, description="Author-written demonstrations (prompt, ideal reply) for SL-CAI."
    )
    demonstrations_file: str | None = Field(
        None, description="YAML file of demonstrations (kind: demonstrations), relative to the constitution."
    )
    template_dirs: list[str] = Field([], description="Template folders overriding the shipped ones.")
    critique: CritiqueSection = Field(default_factory=CritiqueSection)
    comparison: ComparisonSection = Field(default_factory=ComparisonSection)
    templates: Templates = Field(default_factory=Templates)


KINDS: dict[str, type[BaseModel]] = {
    "critique-principles": CritiqueLibrary,
    "comparison-principles": ComparisonLibrary,
    "critique-exemplars": CritiqueExemplarFile,
    "comparison-exemplars": ComparisonExemplarFile,
    "demonstrations": DemonstrationFile,
    "constitution": ConstitutionSpec,
}


def problems_from_validation(
    doc: YamlDoc, err: ValidationError, model: type[BaseModel], line_of: Any = None
) -> list[Problem]:
    """Turn pydantic's errors into one `Problem` per error with the right line and a hint."""
    out: list[Problem] = []
    for e in err.errors():
        loc = tuple(e["loc"])
        # pydantic appends the failing union branch / discriminator to loc; keep the data path.
        loc = tuple(p for p in loc if isinstance(p, int) or not str(p).startswith("function-"))
        path, line = line_of(loc) if line_of else (doc.path, doc.line(loc))
        kind = e["type"]
        hint = None
        if kind == "extra_forbidden":
            allowed = _fields_at(model, loc[:-1])
            hint = did_you_mean(str(loc[-1]), allowed)
            msg = "unknown key"
        elif kind == "missing":
            msg = "missing required field"
        elif kind == "literal_error" and loc and loc[-1] == "kind":
            msg = f"wrong kind {e.get('input')!r}: {e['msg'].lower()}"
        else:
            msg = e["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
        out.append(Problem(path, line, dotted(loc), msg, hint))
    return _typo_explains_missing(out)


def _typo_explains_missing(problems: list[Problem]) -> list[Problem]:
    """A misspelt required key is one mistake, not two: drop the "missing" line for a field an
    "unknown key" next to it suggests (``critque`` → did you mean ``critique``)."""
    suggested = {p.field.rsplit(".", 1)[0] + "." + p.hint for p in problems if p.hint and "." in p.field}
    suggested |= {p.hint for p in problems if p.hint and "." not in p.field}
    return [p for p in problems if not (p.message == "missing required field" and p.field in suggested)]


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the sub-model at `loc`, for 'did you mean' on unknown keys."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return []
        ann = fields[part].annotation
        current = _inner_model(ann)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}).keys())


def _inner_model(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def parse_as(doc: YamlDoc, model: type[BaseModel]) -> Any:
    if not isinstance(doc.data, dict):
        raise CaiError(Problem(doc.path, 1, "", "expected a mapping at the top of the file"))
    try:
        return model.model_validate(doc.data)
    except ValidationError as err:
        raise CaiError(problems_from_validation(doc, err, model)) from None


def kind_of(doc: YamlDoc) -> str:
    if not isinstance(doc.data, dict):
        raise CaiError(Problem(doc.path, 1, "", "expected a mapping at the top of the file"))
    kind = doc.data.get("kind")
    if kind is None:
        raise CaiError(Problem(doc.path, 1, "kind", f"missing (one of: {', '.join(KINDS)})"))
    if not isinstance(kind, str) or kind not in KINDS:
        raise CaiError(
            Problem(
                doc.path,
                doc.line(("kind",)),
                "kind",
                f"unknown kind {kind!r}",
                did_you_mean(str(kind), KINDS),
            )
        )
    return str(kind)

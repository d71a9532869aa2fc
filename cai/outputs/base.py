"""The base of every stage output, how one is parsed, and the pieces every kind shares."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from cai.errors import file_error

Num = int | float


class Output(BaseModel):
    """The base of every stage output: declared fields typed, the rest kept as written."""

    model_config = ConfigDict(extra="allow", frozen=True)

    def figures(self) -> dict[str, Any]:
        """What the stage recorded, as JSON values by name (sorted, as in the file): exactly the
        keys it set, none a default filled in."""
        return _sorted(self.model_dump(mode="json", exclude_unset=True))

    def has(self, key: str) -> bool:
        """Whether the writer recorded `key` at all (declared or not), even as null."""
        return key in self.model_fields_set or key in (self.model_extra or {})

    def value(self, key: str) -> Any:
        """A recorded figure by its written name, for the names Python cannot spell
        (``rewards/margins``) and the open-ended ones; None when not recorded."""
        if key in type(self).model_fields:
            return getattr(self, key)
        return (self.model_extra or {}).get(key)


OutT = TypeVar("OutT", bound=Output)


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def parse_output(kind: type[OutT], data: Any, path: str, line: int | None = None) -> OutT:
    """`data` read from `path` as `kind`; a field of the wrong type is one line naming the file,
    its line (records) and the field."""
    try:
        return kind.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(p) for p in err["loc"]]
        message = err["msg"]
        if loc and loc[-1] in ("int", "float"):  # a branch of `int | float`: say what both take
            loc, message = loc[:-1], "should be a number"
        message = message[:1].lower() + message[1:]
        raise file_error(path, ".".join(loc) or kind.__name__, message, line=line) from None


# --------------------------------------------------------------------------- shared pieces


class Rate(Output):
    """k of n, with its 95% interval."""

    k: int | None = None
    n: int | None = None
    rate: Num | None = None
    lo: Num | None = None
    hi: Num | None = None


class Difference(Output):
    """A difference of two rates (after − before) with its 95% interval."""

    d: Num | None = None
    lo: Num | None = None
    hi: Num | None = None


class Provenance(Output):
    """What every record says about where it came from (its ``provenance``)."""

    constitution: str | None = None
    fingerprint: str | None = None
    cai_version: str | None = None
    judge: Any = None
    judge_settings: JudgeSettings | None = None


class JudgeSettings(Output):
    method: str | None = None
    orders: str | None = None
    contrast_norm: str | None = None
    principles: str | None = None
    k: int | None = None


class Throughput(Output):
    prompts_s: Num | None = None
    tok_s: Num | None = None


# --------------------------------------------------------------------------- critique

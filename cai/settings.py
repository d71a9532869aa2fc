"""The base classes of every settings and data model: strict, frozen, no unknown keys.

They sit below every layer (constitution data, model settings, stage and training settings), so
none of those has to import another to share them.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_infinity(cls, value: Any) -> Any:
        """inf and nan are refused in every field: no setting means them, and JSON cannot hold
        them (they would be written as the non-standard Infinity / NaN)."""
        if not _finite(value):
            raise ValueError("must be a finite number (not inf or nan)")
        return value


class StageSettings(Strict):
    """Frozen, no unknown keys, no type coercion (a recipe's ``lr: 1e-5`` string is an error)."""

    def record(self) -> dict[str, Any]:
        """JSON-shaped settings, as hashed into stage keys and written into manifests.
        ``retry_failed`` says how a rerun treats failed records, not what a record holds."""
        return self.model_dump(mode="json", exclude={"retry_failed"})

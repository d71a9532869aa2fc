"""The base classes of every settings and data model: strict, frozen, no unknown keys.

They sit below every layer (constitution data, model settings, stage and training settings), so
none of those has to import another to share them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class StageSettings(Strict):
    """Frozen, no unknown keys, no type coercion (a recipe's ``lr: 1e-5`` string is an error)."""

    def record(self) -> dict[str, Any]:
        """JSON-shaped settings, as hashed into stage keys and written into manifests.
        ``retry_failed`` says how a rerun treats failed records, not what a record holds."""
        return self.model_dump(mode="json", exclude={"retry_failed"})

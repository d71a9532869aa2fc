"""What a stage runner gets from `cai run`: the recipe, the run folder, the constitution, a log."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from cai.constitution.model import Constitution
from cai.models.settings import Backends, BackendSettings
from cai.redact import redact_text
from cai.run.sections import PromptSlice

if TYPE_CHECKING:
    from cai.run.recipe import RecipeBase as Recipe
    from cai.run.registry import StageRegistry


class RunLog:
    """Timestamped lines in ``RUN/log.txt`` (and on stderr unless quiet)."""

    def __init__(self, path: Path, quiet: bool):
        self.path = path
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {redact_text(message)}"
        from cai.io.store import append_bytes

        append_bytes(self.path, (line + "\n").encode())  # a full disk: one line naming log.txt
        if not self.quiet:
            import sys

            print(line, file=sys.stderr, flush=True)


@dataclass
class RunContext:
    recipe: Recipe
    base: Path
    out: Path
    constitution: Constitution
    quiet: bool
    log: RunLog
    stages: StageRegistry
    dirs: dict[str, Path] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return self.recipe.seed

    def prompts(self, cfg: PromptSlice) -> list[Any]:
        from cai.io.sources import load_prompts

        return cfg.apply(load_prompts(self.local(cfg.prompts)))

    def local(self, ref: str) -> str:
        """A data path named in the recipe, relative to the recipe's folder when it exists there."""
        return str(self.base / ref) if (self.base / ref).exists() else ref

    def backends(self) -> Backends:
        return Backends(
            BackendSettings(**self.recipe.models.model_dump(include=set(BackendSettings.model_fields))),
            quiet=self.quiet,
        )

    def model_dir(self, stage: str) -> Path:
        return self.dirs[stage] / "model"

    def _policies(self) -> list[str]:
        """The stages so far that trained a policy, in run order."""
        return [s.name for s in self.stages if s.policy_label and s.name in self.dirs]

    def policy_spec(self) -> str:
        """The policy this run trained from the recipe's own (the SL-CAI model: a policy stage that
        reads no earlier model), else the recipe's policy."""
        first = [n for n in self._policies() if not self.stages[n].reads_models]
        return str(self.model_dir(first[0])) if first else self.recipe.models.policy

    def earlier_policies(self) -> dict[str, str]:
        """The policies this run trained before its final one, {stage: spec}, in run order."""
        return {name: str(self.model_dir(name)) for name in self._policies()[:-1]}

    def final_policy_spec(self) -> str:
        """The policy the run ends with (PPO's or DPO's, else SL-CAI's), else the recipe's."""
        trained = self._policies()
        return str(self.model_dir(trained[-1])) if trained else self.recipe.models.policy


S = TypeVar("S", bound=BaseModel)


def settings_of(section: BaseModel, model: type[S]) -> S:
    """The stage's own settings model out of its recipe section (which adds prompts and models)."""
    return model.model_validate(section.model_dump(include=set(model.model_fields)))

"""Library chatter is off unless asked for (`--verbose`).

transformers, datasets, accelerate, TRL and torch print deprecation notices, info lines and
Python warnings that bury a command's own progress and summary; none of it is something the user
can act on in a normal run. `LibraryOutput` mutes them for the duration of a command and restores
everything on exit.

Why environment variables as well as logger levels: transformers and datasets set their loggers'
levels from `TRANSFORMERS_VERBOSITY` / `DATASETS_VERBOSITY` when first imported, and importing
them only to lower a level would cost seconds on commands that never load a model. So a library
imported during the command reads the variables, one imported before has its logger lowered,
and both are put back afterwards. Nothing here imports a heavy library.
"""

from __future__ import annotations

import logging
import os
import warnings
from types import TracebackType

# Loggers of the libraries cai drives; children (``transformers.modeling_utils``) inherit.
LIBRARY_LOGGERS = ("transformers", "datasets", "accelerate", "trl", "peft", "huggingface_hub", "torch")
_MUTED_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "DATASETS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


class LibraryOutput:
    """A context that mutes library logs and Python warnings unless `verbose`.

    `unmute()` ends the muting early (a command's own ``--verbose`` after the root's default);
    exit restores whatever was muted. Re-entering is not supported: make a new one.
    """

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self._levels: dict[str, int] = {}
        self._env: dict[str, str | None] = {}
        self._warnings: warnings.catch_warnings | None = None

    @property
    def muted(self) -> bool:
        return self._warnings is not None

    def __enter__(self) -> LibraryOutput:
        if not self.verbose:
            self._mute()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.unmute()

    def _mute(self) -> None:
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")
        self._env = {k: os.environ.get(k) for k in _MUTED_ENV}
        os.environ.update(_MUTED_ENV)
        for name in LIBRARY_LOGGERS:
            logger = logging.getLogger(name)
            self._levels[name] = logger.level
            logger.setLevel(logging.ERROR)

    def unmute(self) -> None:
        """Put back the logger levels, variables and warning filters found on entry."""
        if self._warnings is None:
            return
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
        for k, v in self._env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._warnings.__exit__(None, None, None)
        self._warnings = None
        self._levels, self._env = {}, {}


def libraries_muted() -> bool:
    """Whether library chatter is off right now (by `LibraryOutput`, `--quiet`, or the caller's own
    logging setup): trainers then keep their raw metric dicts to `metrics.jsonl`, off the terminal."""
    return logging.getLogger("transformers").getEffectiveLevel() > logging.WARNING

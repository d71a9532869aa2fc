"""User-facing errors: one line that names the file, the line and the field.

Anything a person can get wrong in a file (YAML, templates, recipes, prompt files) raises
`CaiError`; the CLI prints ``str(error)`` and exits with code 2, never a traceback.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from dataclasses import dataclass


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(str(word), list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


@dataclass
class Problem:
    """One thing wrong in one place; `validate` collects many, other commands raise the first."""

    path: str
    line: int | None
    field: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else f"{self.path}"
        text = f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        if self.hint:
            text += f" (did you mean {self.hint!r}?)"
        # One line, always: messages from libraries, and values echoed back, can carry newlines
        # or any other line break (U+2028, U+0085, form feed …).
        return " ".join(text.splitlines())


class CaiError(Exception):
    """A user error carrying one or more `Problem`s."""

    def __init__(self, problems: Problem | list[Problem]):
        self.problems = problems if isinstance(problems, list) else [problems]
        super().__init__(str(self.problems[0]))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


def fail(path: str, line: int | None, field: str, message: str, hint: str | None = None) -> CaiError:
    """A problem at a place in a file: ``path:line: field: message``. For a command-line option
    use `option_error`, for a file or folder named by an option `file_error`."""
    return CaiError(Problem(str(path), line, field, message, hint))


def option_error(option: str, message: str, *, value: str | None = None, hint: str | None = None) -> CaiError:
    """An option (``--model``) or recipe key (``stages.label.method``) that cannot be used as given:
    ``--option: VALUE: message``, or ``--option: message`` when the value says nothing more."""
    return CaiError(Problem(option, None, value or "", message, hint))


def file_error(path: str | os.PathLike[str], option: str, message: str, *, line: int | None = None) -> CaiError:
    """A file or folder that cannot be used, and the option that named it: ``PATH: --option: message``."""
    return CaiError(Problem(str(path), line, option, message))

"""Progress reporting for long steps: items, items/s (and tokens/s), elapsed time and ETA on
stderr, or nothing when quiet.

Stages advance a bar once per chunk (a batch of prompts or pairs), so with one chunk
(``--batch-size`` equal to ``--limit``) it would sit at 0 and then jump to the end. Until the
first item is done the bar pulses and the elapsed time ticks, so a long first chunk shows that
work is going on; the rate and the ETA appear as soon as there is something to measure. Both are
averages since the start (not rich's short window), so a slow first chunk does not read as
"unknown" for ever.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any


def _per_second(x: float, unit: str) -> str:
    if x < 0.1:
        return f"{x * 60:.1f} {unit}/min"
    return f"{x:.1f} {unit}/s" if x < 100 else f"{x:.0f} {unit}/s"


def _clock(seconds: float) -> str:
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


def progress_columns(unit: str = "items") -> tuple[Any, ...]:
    """The columns of every cai progress bar (also what tests render)."""
    from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class PulseUntilFirstItem(BarColumn):
        """A bar that pulses while nothing is done yet, so one long chunk does not look stuck."""

        def render(self, task: Any) -> Any:
            bar = super().render(task)
            bar.pulse = not task.finished and task.completed == 0
            return bar

    class Rate(ProgressColumn):
        """Items (and tokens, when the stage counts them) per second since the start."""

        def render(self, task: Any) -> Text:
            elapsed = task.elapsed
            if not elapsed or not task.completed:
                return Text(f"– {unit}/s")
            text = _per_second(task.completed / elapsed, unit)
            tokens = task.fields.get("tokens", 0)
            if tokens:
                text += f", {tokens / elapsed:.0f} tok/s"
            return Text(text)

    class Eta(ProgressColumn):
        """Time left at the average rate so far; "eta –" until the first item is done."""

        def render(self, task: Any) -> Text:
            if task.finished or (task.total is not None and task.completed >= task.total):
                return Text("done")
            elapsed = task.elapsed
            if not elapsed or not task.completed or task.total is None:
                return Text("eta –")
            return Text(f"eta {_clock((task.total - task.completed) * elapsed / task.completed)}")

    return (
        TextColumn("{task.description}"),
        PulseUntilFirstItem(),
        MofNCompleteColumn(),
        Rate(),
        TimeElapsedColumn(),
        Eta(),
    )


class StepProgress:
    """A rich progress bar (when stderr is a terminal-like stream and not quiet) plus counters.

    Counters are kept even when quiet, so stages can report throughput in their summaries.
    """

    def __init__(self, description: str, total: int, quiet: bool = False, unit: str = "items"):
        self.description = description
        self.total = total
        self.quiet = quiet
        self.unit = unit
        self.items = 0
        self.tokens = 0
        self.start = time.perf_counter()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> StepProgress:
        if not self.quiet:
            from rich.console import Console
            from rich.progress import Progress

            self._progress = Progress(*progress_columns(self.unit), console=Console(file=sys.stderr), transient=False)
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, tokens=0)
        return self

    def advance(self, items: int = 0, tokens: int = 0) -> None:
        self.items += items
        self.tokens += tokens
        if self._progress is not None:
            self._progress.update(self._task, advance=items, tokens=self.tokens)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

"""Progress reporting for long steps: items, tokens/s and ETA on stderr, or nothing when quiet."""

from __future__ import annotations

import sys
import time
from types import TracebackType


class StepProgress:
    """A rich progress bar (when stderr is a terminal-like stream and not quiet) plus counters.

    Counters are kept even when quiet, so stages can report throughput in their summaries.
    """

    def __init__(self, description: str, total: int, quiet: bool = False):
        self.description = description
        self.total = total
        self.quiet = quiet
        self.items = 0
        self.tokens = 0
        self.start = time.perf_counter()
        self._progress = None
        self._task = None

    def __enter__(self) -> StepProgress:
        if not self.quiet:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=Console(file=sys.stderr),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, rate="")
        return self

    def advance(self, items: int = 0, tokens: int = 0) -> None:
        self.items += items
        self.tokens += tokens
        if self._progress is not None:
            rate = f"{self.tokens / max(self.elapsed, 1e-9):.0f} tok/s" if self.tokens else ""
            self._progress.update(self._task, advance=items, rate=rate)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

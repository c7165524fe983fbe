"""Step progress for people watching a run: cells done, cells/s and time left, per chunk.

- ``StepProgress``: on a terminal, a Rich progress bar per step (``step 2: <title>``, bar,
  ``40,000/100,000``, ``17,000 cells/s``, ETA; transient: it disappears when
  the step stops, leaving the CLI's own step lines); elsewhere (CI, logs), a plain line at most
  every ``PLAIN_INTERVAL_SECONDS`` plus one final line per step.
- ``progress_line``: the line the Dagster run log gets for each chunk; ``chunk_reporter`` makes
  the ``progress(done, total)`` callback the core steps take from any log function;
  ``parse_progress_line`` reads the figures back from such a line.

Imports only the standard library; Rich is imported when a bar is first shown, so the CLI starts
without it (and never loads dagster, numba, anndata, pyarrow or polars through this module).
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

PLAIN_INTERVAL_SECONDS = 10.0
"""Least time between two plain lines of one step (the final line is always printed)."""

Clock = Callable[[], float]


def format_duration(seconds: float) -> str:
    """``4.2 s`` under a minute, else ``H:MM:SS``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def progress_figures(done: int, total: int | None, seconds: float, eta: bool = True) -> str:
    """``40,000/100,000 cells (40 %), 17,000 cells/s, ETA 3.5 s``: the percentage rounded down
    (100 % only when done), the rate the mean since the step started (left out before any time
    has passed), the ETA at that rate (only while cells are left). No total: ``40,000 cells, ...``."""
    if total is None:
        parts = [f"{done:,} cells"]
    else:
        percent = done * 100 // total if total else 100
        parts = [f"{done:,}/{total:,} cells ({percent} %)"]
    if seconds > 0:
        rate = done / seconds
        parts.append(f"{rate:,.0f} cells/s")
        if eta and total is not None and 0 < done < total:
            parts.append(f"ETA {format_duration((total - done) / rate)}")
    return ", ".join(parts)


def progress_line(step_title: str, done: int, total: int | None, seconds: float) -> str:
    """The run-log line for one chunk: ``<title>: 40,000/100,000 cells (40 %), 17,000 cells/s, ETA 3.5 s``."""
    return f"{step_title}: {progress_figures(done, total, seconds)}"


_FIGURES = re.compile(r"(\d[\d,]*)/(\d[\d,]*) cells \(")


def parse_progress_line(message: str) -> tuple[int, int] | None:
    """``(done, total)`` of a ``progress_line`` (found anywhere in ``message``), else None."""
    found = _FIGURES.search(message)
    if found is None:
        return None
    return int(found.group(1).replace(",", "")), int(found.group(2).replace(",", ""))


def chunk_reporter(step_title: str, emit: Callable[[str], object], clock: Clock = time.monotonic) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback for the core steps that hands ``emit`` (e.g.
    ``context.log.info``) one ``progress_line`` per call, timed from this call."""
    started = clock()

    def report(done: int, total: int) -> None:
        emit(progress_line(step_title, done, total, clock() - started))

    return report


def _is_terminal(file: IO[str]) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class StepProgress:
    """One step's progress at a time: ``start(step, title, total)``, ``update(done, total)``
    any number of times, ``stop()``. Starting a step stops the one shown.

    ``file``: where to write (default ``sys.stdout``, looked up at each start); a terminal gets a
    Rich bar, anything else plain lines. ``terminal`` forces either. ``clock``: seconds, for the
    rates and the plain lines' spacing (and the bar's, via Rich's ``get_time``). Thread-safe.
    """

    def __init__(
        self,
        file: IO[str] | None = None,
        *,
        terminal: bool | None = None,
        clock: Clock = time.monotonic,
        interval: float = PLAIN_INTERVAL_SECONDS,
    ) -> None:
        self._file = file
        self._terminal = terminal
        self._clock = clock
        self._interval = interval
        self._lock = threading.Lock()
        self._step: int | None = None
        self._started = 0.0
        self._last_line = 0.0
        self._done = 0
        self._total: int | None = None
        self._updated = False
        self._bar: Any = None  # rich.progress.Progress while a bar is shown
        self._task: Any = None

    @property
    def file(self) -> IO[str]:
        return self._file if self._file is not None else sys.stdout

    def start(self, step: int, title: str, total: int | None = None) -> None:
        self.stop()
        with self._lock:
            self._step, self._done, self._total, self._updated = step, 0, total, False
            self._started = self._last_line = self._clock()
            terminal = self._terminal if self._terminal is not None else _is_terminal(self.file)
            if terminal:
                self._bar = _rich_progress(self.file, self._clock)
                self._task = self._bar.add_task(f"step {step}: {title}" if title else f"step {step}", total=total)
                self._bar.start()

    def update(self, done: int, total: int | None) -> None:
        with self._lock:
            if self._step is None:
                return
            self._done, self._total, self._updated = done, total, True
            if self._bar is not None:
                self._bar.update(self._task, completed=done, total=total)
                return
            now = self._clock()
            # the last chunk's figures wait for stop(): one final line, not two
            if now - self._last_line >= self._interval and (total is None or done < total):
                self._last_line = now
                self._print(progress_figures(done, total, now - self._started))

    def stop(self) -> None:
        """Remove the bar, or print the final plain line (when any update came)."""
        with self._lock:
            if self._step is None:
                return
            if self._bar is not None:
                self._bar.stop()
                self._bar = self._task = None
            elif self._updated:
                seconds = self._clock() - self._started
                self._print(f"{progress_figures(self._done, self._total, seconds, eta=False)}, in {format_duration(seconds)}")
            self._step = None

    def _print(self, figures: str) -> None:
        print(f"  step {self._step}: {figures}", file=self.file, flush=True)


def _rich_progress(file: IO[str], clock: Clock) -> Any:
    """A transient Rich bar over the terminal's width: ``step 2: <title>`` (cut to 24
    characters), the bar, ``40,000/100,000``, ``17,000 cells/s`` (Rich's recent rate), ETA."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.table import Column
    from rich.text import Text

    fixed = Column(no_wrap=True)

    class CellsColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            done = int(task.completed)
            return Text(f"{done:,}" if task.total is None else f"{done:,}/{int(task.total):,}", style="progress.download")

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text("? cells/s" if speed is None else f"{speed:,.0f} cells/s", style="progress.data.speed")

    return Progress(
        TextColumn("{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis", max_width=24)),
        BarColumn(bar_width=None, table_column=Column(ratio=1)),
        CellsColumn(table_column=fixed),
        RateColumn(table_column=fixed),
        TimeRemainingColumn(table_column=fixed),
        console=Console(file=file, force_terminal=True),
        transient=True,
        get_time=clock,
        refresh_per_second=4,
        expand=True,
    )

"""scrna_assets.progress: plain lines (exact, spaced by the interval), the Rich bar on a
pseudo-terminal, the run-log line, and an import that loads nothing heavy."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time

import pytest

from scrna_assets.progress import (
    PLAIN_INTERVAL_SECONDS,
    StepProgress,
    chunk_reporter,
    format_duration,
    parse_progress_line,
    progress_line,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plain(interval: float = PLAIN_INTERVAL_SECONDS) -> tuple[StepProgress, io.StringIO, FakeClock]:
    out, clock = io.StringIO(), FakeClock()
    return StepProgress(out, clock=clock, interval=interval), out, clock


def test_plain_lines_are_exact() -> None:
    """Not a terminal: a line at most every 10 s while cells are left, then one final line."""
    progress, out, clock = plain()
    progress.start(2, "Converting h5ad to parquet chunks of cell sentences", 100_000)
    for at, done in ((2, 10_000), (9.9, 30_000), (10, 40_000), (12, 50_000), (19, 90_000), (20, 95_000), (25, 100_000)):
        clock.now = 1000.0 + at
        progress.update(done, 100_000)
    progress.stop()
    assert out.getvalue().splitlines() == [
        "  step 2: 40,000/100,000 cells (40 %), 4,000 cells/s, ETA 15.0 s",
        "  step 2: 95,000/100,000 cells (95 %), 4,750 cells/s, ETA 1.1 s",
        "  step 2: 100,000/100,000 cells (100 %), 4,000 cells/s, in 25.0 s",
    ]


def test_plain_lines_never_flood() -> None:
    """An update every 0.1 s for 100 s: 9 periodic lines (at 10, 20, ... 90 s) and the final one;
    long durations as H:MM:SS; a stop after no update prints nothing; a start stops the step shown."""
    progress, out, clock = plain()
    progress.start(3, "ages", 1_000_000)
    for tick in range(1, 1001):
        clock.now = 1000.0 + tick / 10
        progress.update(tick * 1000, 1_000_000)
    clock.now = 1000.0 + 3725
    progress.start(4, "split", None)  # stops step 3
    progress.stop()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0] == "  step 3: 100,000/1,000,000 cells (10 %), 10,000 cells/s, ETA 0:01:30"
    assert lines[-1] == "  step 3: 1,000,000/1,000,000 cells (100 %), 268 cells/s, in 1:02:05"


def test_plain_without_total_and_update_before_start() -> None:
    progress, out, clock = plain(interval=5)
    progress.update(5, 10)  # no step started: ignored
    progress.start(4, "split", None)
    clock.now += 5
    progress.update(1_500, None)
    progress.stop()
    progress.stop()  # twice: no-op
    assert out.getvalue().splitlines() == ["  step 4: 1,500 cells, 300 cells/s", "  step 4: 1,500 cells, 300 cells/s, in 5.0 s"]


def test_progress_line_and_chunk_reporter() -> None:
    assert progress_line("convert", 40_000, 100_000, 2.0) == "convert: 40,000/100,000 cells (40 %), 20,000 cells/s, ETA 3.0 s"
    assert progress_line("convert", 100_000, 100_000, 200.0) == "convert: 100,000/100,000 cells (100 %), 500 cells/s"
    assert progress_line("convert", 0, 0, 0.0) == "convert: 0/0 cells (100 %)"
    assert parse_progress_line("step_key - " + progress_line("x", 1_234_567, 2_000_000, 3.0)) == (1_234_567, 2_000_000)
    assert parse_progress_line("no figures here") is None
    assert format_duration(59.94) == "59.9 s" and format_duration(3599.6) == "1:00:00"
    clock, lines = FakeClock(), []
    report = chunk_reporter("split", lines.append, clock=clock)
    clock.now += 4
    report(10_000, 30_000)
    clock.now += 8
    report(30_000, 30_000)
    assert lines == ["split: 10,000/30,000 cells (33 %), 2,500 cells/s, ETA 8.0 s", "split: 30,000/30,000 cells (100 %), 2,500 cells/s"]


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_terminal_gets_a_rich_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a pseudo-terminal (detected, not forced) the bar shows the step, cells done/total,
    cells/s and the ETA, and is erased at stop (transient)."""
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.delenv("TERM", raising=False)
    master, slave = os.openpty()
    received: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # slave closed
                return
            if not data:
                return
            received.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with os.fdopen(slave, "w") as terminal:
        clock = FakeClock()
        progress = StepProgress(terminal, clock=clock)
        progress.start(2, "convert", 100_000)
        for done in (20_000, 40_000):
            clock.now += 1
            progress.update(done, 100_000)
            time.sleep(0.4)  # a refresh of the bar (4 a second)
        progress.stop()
    reader.join(5)
    os.close(master)
    text = b"".join(received).decode("utf-8", "replace")
    assert "step 2: convert" in text
    assert "40,000/100,000" in text
    assert "20,000 cells/s" in text
    assert "0:00:03" in text  # ETA: 60,000 cells left at 20,000 cells/s
    assert "\x1b[2K" in text.rsplit("40,000/100,000", 1)[1]  # erased at stop
    assert "  step 2:" not in text  # no plain line on a terminal


def test_import_loads_nothing_heavy() -> None:
    """A fresh interpreter importing scrna_assets.progress, and printing plain lines, loads no
    dagster, numba, anndata, pyarrow, polars, numpy, nor rich (only a terminal needs it)."""
    code = (
        "import io, sys\n"
        "from scrna_assets.progress import StepProgress\n"
        "p = StepProgress(io.StringIO(), clock=lambda: 0.0)\n"
        "p.start(2, 'x', 10); p.update(5, 10); p.stop()\n"
        "heavy = ('dagster', 'numba', 'anndata', 'pyarrow', 'polars', 'numpy', 'rich')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"

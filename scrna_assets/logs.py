"""Per-dataset logs: ``<log-dir>/<name>/pipeline.json`` (JSON lines) and ``pipeline.log`` (for people).

Only figures and messages go in; settings that could hold secrets (the HF token) never do.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scrna_assets.core.atomic_files import append_text_atomic


class DatasetLog:
    def __init__(self, folder: Path, dataset: str) -> None:
        self.folder = folder
        self.dataset = dataset

    def event(self, step: str, event: str, level: str = "INFO", message: str = "", **figures: Any) -> None:
        record = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "level": level,
            "dataset": self.dataset,
            "step": step,
            "event": event,
            "message": message,
            "figures": figures,
        }
        # Whole lines or nothing: a full disk must not leave a torn JSON line in the log.
        append_text_atomic(self.folder / "pipeline.json", json.dumps(record, default=str, sort_keys=False) + "\n")
        shown = " ".join(f"{k}={v}" for k, v in figures.items())
        line = f"{record['time']} {level:<7} [{self.dataset}] {step}: {event}"
        line += f" - {message}" if message else ""
        line += f" ({shown})" if shown else ""
        append_text_atomic(self.folder / "pipeline.log", line + "\n")


class StepLog:
    """Logs a step's start, then its end with figures, or its failure with the cause."""

    def __init__(self, log: DatasetLog, step: str) -> None:
        self.log = log
        self.step = step
        self.figures: dict[str, Any] = {}

    def note(self, message: str) -> None:
        """Something the user must know about the data (a warning, not a failure)."""
        self.log.event(self.step, "note", level="WARNING", message=message)

    def __enter__(self) -> StepLog:
        self.log.event(self.step, "start")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            self.log.event(self.step, "end", **self.figures)
        else:
            self.log.event(self.step, "failed", level="ERROR", message=f"{type(exc).__name__}: {exc}")

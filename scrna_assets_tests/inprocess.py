"""Runs a dataset's process function in the test process (so monkeypatches apply), with the
messages it would send to the batch parent turned into reporter calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scrna_assets.resources import PipelineSettings
from scrna_assets.runner import StepResult
from scrna_assets.summary import DatasetOutcome
from scrna_assets.worker import DATASET_STEPS, DatasetTask, process_dataset


def run_dataset_here(
    settings: PipelineSettings, instance: Any, dataset: str, path: Path, reporter: Any, steps: tuple[int, ...] = DATASET_STEPS, **options: Any
) -> tuple[list[StepResult], DatasetOutcome]:
    """(each step's final result in the order reported, the summary row)."""
    results: dict[int, StepResult] = {}

    def send(kind: str, *args: Any) -> None:
        if kind == "step":
            reporter.step(*args)
            if args[1] is not None:
                results[args[0]] = args[1]
        elif kind == "progress" and hasattr(reporter, "progress"):
            reporter.progress(*args)
        elif kind == "note":
            reporter.note(args[0])

    outcome = process_dataset(DatasetTask.of(settings, dataset, path, steps, **options), send, instance)
    return list(results.values()), outcome

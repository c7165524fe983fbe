"""What runs in a dataset's own process: the dataset's lock, the up-to-date test, one Dagster run
of its steps, and the cleanup after a failure, all under that lock.

The process is forked by ``batch`` and talks with it over a pipe: ("size", cells) before the run,
after which it waits for the parent's go-ahead; ("step", n, result or None) as steps start and end,
("progress", ...), ("note", line), and finally ("done", outcome). If it dies before "done", the
batch parent knows the dataset crashed.
"""

from __future__ import annotations

import importlib
import os
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from dagster import AssetCheckSeverity, DagsterInstance

from scrna_assets.checks import BLOCKING_CHECKS
from scrna_assets.core.errors import InputError
from scrna_assets.core.h5ad_reader import H5adSource
from scrna_assets.dataset_lock import DatasetBusyError
from scrna_assets.inputs import readable_input
from scrna_assets.layout import DatasetLayout
from scrna_assets.logs import DatasetLog
from scrna_assets.provenance import mapping_digest, stale_reason
from scrna_assets.resources import PipelineSettings
from scrna_assets.runner import PipelineRunner, StepResult, cli_instance
from scrna_assets.steps import AGED_CHUNKS, BY_NUMBER, DATASET_STEPS, INTERIM_ASSETS, PARQUET_CHUNKS, TRAIN_TEST_SPLITS
from scrna_assets.summary import FAILED, SKIPPED, SUCCESS, DatasetOutcome

READ_ENVIRONMENT_AT_IMPORT = ("huggingface_hub.constants",)
"""Modules that read the environment (HF_ENDPOINT, HF_HUB_OFFLINE...) once, when imported."""
Send = Callable[..., None]
"""Passes one message to the batch parent: ("size", cells or None), ("step", n, result or None),
("progress", n, done, total), ("note", line) or ("done", outcome)."""


@dataclass(frozen=True)
class DatasetTask:
    """Everything a dataset's process needs, sent to it whole: it starts from a warm server, not
    from the caller, so the caller's working folder and environment travel with the task."""

    dataset: str
    path: Path | None
    steps: tuple[int, ...]
    setting_values: dict[str, Any]
    """The settings' fields (a Dagster resource does not pickle)."""
    run_id: str
    skip_existing: bool = False
    hgnc_digest: str = ""
    debug: bool = False
    cwd: str = field(default_factory=os.getcwd)
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    @classmethod
    def of(cls, settings: PipelineSettings, dataset: str, path: Path | None, steps: tuple[int, ...], **options: Any) -> DatasetTask:
        values = {name: getattr(settings, name) for name in PipelineSettings.model_fields}
        return cls(dataset, path, steps, values, str(uuid.uuid4()), **options)

    @property
    def settings(self) -> PipelineSettings:
        return PipelineSettings(**self.setting_values)

    @property
    def layout(self) -> DatasetLayout:
        values = self.setting_values
        return DatasetLayout.from_roots(values["interim_dir"], values["output_dir"], values["log_dir"])


def run_task(task: DatasetTask, pipe: Connection) -> None:
    """The entry point of a dataset's process (and of step 1's)."""
    os.chdir(task.cwd)
    os.environ.clear()
    os.environ.update(task.environ)
    for module in READ_ENVIRONMENT_AT_IMPORT:  # imported by the warm process, maybe under another environment
        importlib.reload(importlib.import_module(module))

    def send(*message: Any) -> None:
        pipe.send(message)

    try:
        instance = cli_instance()
        done = hgnc_step(task, send, instance) if task.steps == (1,) else process_dataset(task, send, instance, lambda: pipe.recv())
    except Exception as error:  # a bug of ours: one line in the summary, the trace for --debug
        if task.debug:
            traceback.print_exc()
        problem = f"internal error: {type(error).__name__}: {error}"
        first = task.steps[0]
        if task.steps == (1,):
            done = (StepResult(1, BY_NUMBER[1].asset, False, problem), "")
        else:
            done = _failed(task, f"step {first} ({BY_NUMBER[first].asset}): {problem}")
    send("done", done)
    pipe.close()


def hgnc_step(task: DatasetTask, send: Send, instance: DagsterInstance) -> tuple[StepResult, str]:
    """Step 1, and the digest of the mapping that the datasets' up-to-date test compares."""
    runner = PipelineRunner(task.settings, instance, task.debug)
    result = runner.run_steps((1,), None, None, lambda step, r: send("step", step, r), run_id=task.run_id)[0]
    digest = mapping_digest(_read_mapping(task.layout.hgnc_mapping_file())) if result.success else ""
    return result, digest


def _read_mapping(path: Path) -> Any:
    import polars as pl

    return pl.read_parquet(path)


def _failed(task: DatasetTask, message: str) -> DatasetOutcome:
    return DatasetOutcome(task.dataset, str(task.path), FAILED, message)


def process_dataset(task: DatasetTask, send: Send, instance: DagsterInstance, wait_turn: Callable[[], object] | None = None) -> DatasetOutcome:
    """Steps 2-5 (or one step) of one dataset, holding its lock from the first check to the last
    deletion; a run that cannot have the lock does nothing else. With ``wait_turn``, the input's
    size goes to the batch parent first, as ("size", cells or None), and the run starts when
    ``wait_turn`` returns: a batch runs a file larger than one chunk only when the cores and the
    memory are free for it."""
    layout, first = task.layout, task.steps[0]
    try:
        source = readable_input(task.path) if task.path is not None else None
        with layout.lock(task.dataset, task.run_id):
            if task.skip_existing and source is not None:
                reason = stale_reason(layout, task.dataset, source, task.settings, task.hgnc_digest, BLOCKING_CHECKS)
                if reason is None:
                    send("note", f"SKIPPED {task.dataset}: outputs are up to date")
                    return DatasetOutcome(task.dataset, str(source), SKIPPED, "outputs up to date (same input file and parameters)")
            if wait_turn is not None:
                send("size", input_cells(source, task.setting_values["matrix"]))
                wait_turn()
            return _run(task, source, layout, send, instance)
    except (InputError, DatasetBusyError) as error:
        send("step", first, StepResult(first, BY_NUMBER[first].asset, False, str(error)))
        return _failed(task, f"step {first} ({BY_NUMBER[first].asset}): {error}")


def input_cells(path: Path | None, matrix: str) -> int | None:
    """The input's cells, from its header (a few ms); None when it cannot be read, which the run
    itself then reports."""
    if path is None:
        return None
    try:
        with H5adSource(path, matrix) as source:
            return source.n_obs
    except Exception:
        return None


def _run(task: DatasetTask, source: Path | None, layout: DatasetLayout, send: Send, instance: DagsterInstance) -> DatasetOutcome:
    settings = task.settings  # made once: a resource takes ~15 ms to build
    runner = PipelineRunner(settings, instance, task.debug)
    runner.register(task.dataset)
    full = task.steps == DATASET_STEPS

    def on_step(step: int, result: StepResult | None) -> None:
        send("step", step, result)
        if full and result is not None and result.success and step == 4 and not settings.keep_interim:
            send("note", f"Cleanup: interim chunks of {task.dataset} removed")

    results = runner.run_steps(
        task.steps, task.dataset, source, on_step, run_id=task.run_id, on_progress=lambda *figures: send("progress", *figures)
    )
    failed = next((r for r in results if not r.success), None)
    if full and failed is not None and failed.step < 5:
        removed = discard_partial(layout, task.dataset)
        send("note", f"Cleanup after failure: {', '.join(str(p) for p in removed) or 'nothing partial was left'}")
    return outcome(task.dataset, source, results)


def discard_partial(layout: DatasetLayout, dataset: str) -> list[Path]:
    """After a failed run, by the holder of the dataset's lock: remove its interim folders;
    published outputs are complete by construction (atomic rename) and stay."""
    removed = layout.remove_dataset(dataset, INTERIM_ASSETS)
    try:
        DatasetLog(layout.dataset_log_dir(dataset), dataset).event(
            "cleanup", "partial interim removed after failure", removed=[str(p) for p in removed]
        )
    except OSError:  # e.g. the log folder is full: the failure that brought us here is the one to report
        pass
    return removed


def outcome(dataset: str, path: Path | None, results: list[StepResult]) -> DatasetOutcome:
    """The summary row of a dataset from its steps' results."""
    figures = {r.asset: r.figures for r in results}
    failed = next((r for r in results if not r.success), None)
    checks = {name: severity for r in results for name, severity in r.failed_checks.items()}
    errors = sorted(n for n, s in checks.items() if s == AssetCheckSeverity.ERROR.value)
    warnings = sorted(n for n, s in checks.items() if s != AssetCheckSeverity.ERROR.value)
    if failed:
        message = f"step {failed.step} ({failed.asset}): {failed.message}"
    else:
        notes = [str(r.figures["note"]) for r in results if r.figures.get("note")]
        message = "; ".join(
            part for part in (
                *notes,
                f"failed checks: {', '.join(errors)}" if errors else "",
                f"check warnings: {', '.join(warnings)}" if warnings else "",
            ) if part
        )
    return DatasetOutcome(
        dataset=dataset,
        input_file=str(path),
        status=FAILED if failed or errors else SUCCESS,
        message=message,
        cells_read=int(figures.get(PARQUET_CHUNKS, {}).get("cells", 0)),
        cells_with_age=int(figures.get(AGED_CHUNKS, {}).get("cells_with_age", 0)),
        train_cells=int(figures.get(TRAIN_TEST_SPLITS, {}).get("train_cells", 0)),
        test_cells=int(figures.get(TRAIN_TEST_SPLITS, {}).get("test_cells", 0)),
    )

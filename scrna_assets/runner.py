"""Run the Dagster assets for one dataset from Python: what the CLI uses, so there is one code path.

Steps 2-5 of a dataset are one in-process run on a persistent instance (on the example, one run
per step took 6-9 s against 1.7-2.8 s for one run: Dagster's own work per run), and the runs and
partitions show up in `dagster dev` afterwards. A step command (`preprocess step3 ...`) is a run of that step alone.
Progress is reported step by step as the run goes, from the run's own events.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import polars as pl
from dagster import (
    AssetCheckSeverity,
    AssetSelection,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    LoggerDefinition,
    colored_console_logger,
    define_asset_job,
    in_process_executor,
    logger,
)

from scrna_assets.checks import ALL_CHECKS
from scrna_assets.definitions import ALL_ASSETS, build_resources
from scrna_assets.inputs import datasets_by_name
from scrna_assets.layout import INTERIM_ASSETS, OUTPUT_ASSET, DatasetLayout
from scrna_assets.logs import DatasetLog
from scrna_assets.partitions import DATASETS_PARTITIONS_NAME, dataset_name
from scrna_assets.provenance import expected_output_provenance, is_up_to_date, mapping_digest
from scrna_assets.resources import PipelineSettings
from scrna_assets.summary import FAILED, SKIPPED, SUCCESS, DatasetOutcome

DEFAULT_DAGSTER_HOME = ".dagster"
STEPS: dict[int, tuple[str, str]] = {
    1: ("hgnc_mapper", "Loading the HGNC gene mapping"),
    2: ("parquet_chunks", "Converting h5ad to parquet chunks of cell sentences"),
    3: ("aged_chunks", "Adding donor age from development_stage"),
    4: ("train_test_splits", "Splitting into train and test"),
    5: ("hf_upload", "Uploading to the HuggingFace Hub"),
}
DATASET_STEPS = (2, 3, 4, 5)
CHECKED_ASSET = "train_test_splits"
CLI_JOB = "preprocess_steps"
PROGRESS_LOGGER = "scrna_assets.runner.progress"
PASSED = "PASSED"
# Failures reach the user as one line from the runner; Dagster's own console log would repeat them
# with stack traces, so it is silenced unless --debug. Loggers not named in the run config are not
# started, so the progress logger is named too.
def _loggers_config(debug: bool) -> dict[str, Any]:
    return {"console": {"config": {"log_level": "DEBUG" if debug else "CRITICAL"}}, "progress": {}}


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``), so the
    next file starts from the same footprint instead of a fragmented heap."""
    gc.collect()
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        try:
            ctypes.CDLL(libc_name).malloc_trim(0)
        except (OSError, AttributeError):
            pass


def cli_instance() -> DagsterInstance:
    """The instance from ``DAGSTER_HOME``, or a persistent ``./.dagster`` (SQLite) when unset."""
    if not os.environ.get("DAGSTER_HOME"):
        home = Path(DEFAULT_DAGSTER_HOME).resolve()
        home.mkdir(parents=True, exist_ok=True)
        config = home / "dagster.yaml"
        if not config.exists():
            config.write_text("telemetry:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = str(home)
    return DagsterInstance.get()


@dataclass
class StepResult:
    step: int
    asset: str
    success: bool
    message: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)
    """Check name -> PASSED, or the severity (ERROR or WARN) of a check that did not pass."""

    @property
    def failed_checks(self) -> dict[str, str]:
        return {name: outcome for name, outcome in self.checks.items() if outcome != PASSED}


def _failure_message(event: DagsterEvent) -> str:
    """The asset's own description (``Failure``) or the innermost error of a failed step."""
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    error = data.error
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def _figures(event: DagsterEvent) -> dict[str, Any]:
    """The metadata of an asset materialization event, as plain values."""
    metadata = event.step_materialization_data.materialization.metadata
    return {key: getattr(value, "value", value) for key, value in metadata.items()}


class _StepEvents(logging.Handler):
    """Turns a run's events into one StepResult per asset step, passed on as each step ends.

    The checked step's success is held until its checks have run (the next step starts, or the
    run ends: ``pass_on_held``), so it is passed on with their outcomes, and a check that crashes
    fails that step without a ✓ printed first.
    """

    def __init__(self, assets: dict[str, int], on_step: Callable[[int, StepResult | None], None]) -> None:
        super().__init__(logging.DEBUG)
        self.assets = assets
        self.on_step = on_step
        self.results: dict[str, StepResult] = {}
        self._figures: dict[str, dict[str, Any]] = {}
        self._started: dict[str, float] = {}
        self._held: StepResult | None = None
        self.checks: dict[str, str] = {}

    def report(self, step: int, result: StepResult | None) -> None:
        """Pass a result on, unless it is the held one: that goes out with ``pass_on_held``, as it is then."""
        if result is None or result is not self._held:
            self.on_step(step, result)

    def pass_on_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self.on_step(held.step, held)

    def emit(self, record: logging.LogRecord) -> None:
        event: DagsterEvent | None = getattr(record, "dagster_event", None)
        if event is not None and event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.asset_check_evaluation_data
            self.checks[evaluation.check_name] = PASSED if evaluation.passed else evaluation.severity.value
        if event is None or event.step_key not in self.assets:
            return
        asset, step = event.step_key, self.assets[event.step_key]
        if event.event_type == DagsterEventType.STEP_START:
            self.pass_on_held()
            self._started[asset] = time.perf_counter()
            self.on_step(step, None)
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            self._figures.setdefault(asset, {}).update(_figures(event))
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            success = event.event_type == DagsterEventType.STEP_SUCCESS
            result = StepResult(step, asset, success, "" if success else _failure_message(event), self._figures.get(asset, {}))
            result.figures.setdefault("seconds", round(time.perf_counter() - self._started.get(asset, time.perf_counter()), 3))
            self.results[asset] = result
            if success and asset == CHECKED_ASSET:
                result.checks = self.checks
                self._held = result
            else:
                self.on_step(step, result)

    def logger_definition(self) -> LoggerDefinition:
        @logger(description="Step progress of a run, for the CLI.")
        def step_events(_init_context: Any) -> logging.Logger:
            log = logging.getLogger(PROGRESS_LOGGER)
            log.handlers, log.propagate = [self], False
            log.setLevel(logging.DEBUG)
            return log

        return step_events


class Reporter(Protocol):
    """Receives progress, so the runner itself never prints."""

    def file(self, index: int, total: int, dataset: str) -> None: ...

    def step(self, step: int, result: StepResult | None) -> None: ...

    def note(self, line: str) -> None: ...


class PipelineRunner:
    """Materializes assets for datasets with the given settings on one instance."""

    def __init__(self, settings: PipelineSettings, instance: DagsterInstance, debug: bool = False) -> None:
        self.settings = settings
        self.instance = instance
        self.debug = debug
        self.layout = DatasetLayout.from_roots(settings.interim_dir, settings.output_dir, settings.log_dir)

    def register(self, dataset: str) -> None:
        if not self.instance.has_dynamic_partition(DATASETS_PARTITIONS_NAME, dataset):
            self.instance.add_dynamic_partitions(DATASETS_PARTITIONS_NAME, [dataset])

    def run_steps(
        self, steps: tuple[int, ...], dataset: str | None, h5ad_path: Path | None, on_step: Callable[[int, StepResult | None], None]
    ) -> list[StepResult]:
        """One in-process run of these steps' assets (and their checks); ``on_step`` hears each
        step start and end. Returns the results of the steps that ran, in order."""
        assets = {STEPS[step][0]: step for step in steps}
        run_config: dict[str, Any] = {"loggers": _loggers_config(self.debug)}
        if "parquet_chunks" in assets and h5ad_path is not None:
            run_config["ops"] = {"parquet_chunks": {"config": {"h5ad_path": str(h5ad_path)}}}
        events = _StepEvents(assets, on_step)
        definitions = Definitions(
            assets=[*ALL_ASSETS, *ALL_CHECKS],
            jobs=[define_asset_job(CLI_JOB, selection=AssetSelection.assets(*assets), executor_def=in_process_executor)],
            resources=build_resources(self.settings),
            loggers={"console": colored_console_logger, "progress": events.logger_definition()},
        )
        try:
            result = definitions.resolve_job_def(CLI_JOB).execute_in_process(
                run_config=run_config,
                instance=self.instance,
                partition_key=dataset,
                raise_on_error=False,
                tags={"scrna_assets/source": "cli"},
            )
        finally:
            logging.getLogger(PROGRESS_LOGGER).handlers = []  # the next run brings its own handler
            release_memory()
        ran = [events.results[asset] for asset in assets if asset in events.results]
        blocked = any(outcome == AssetCheckSeverity.ERROR.value for outcome in events.checks.values())
        if not result.success and all(r.success for r in ran) and not blocked:
            ran = self._blame(result, steps, ran, events.report)
        # A failed ERROR check is blocking: the steps after it did not run, and the summary names it.
        events.pass_on_held()
        return ran

    @staticmethod
    def _blame(
        result: ExecuteInProcessResult, steps: tuple[int, ...], ran: list[StepResult], on_step: Callable[[int, StepResult | None], None]
    ) -> list[StepResult]:
        """A run that failed outside our asset steps (a check that crashed, a run that could not
        start): the failure goes to the step the check belongs to, or the first that did not run."""
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        message = f"{failure.step_key}: {_failure_message(failure)}" if failure is not None else "the run failed to start"
        checked = next((r for r in ran if r.asset == CHECKED_ASSET), None)
        if checked is not None and failure is not None and failure.step_key not in {STEPS[step][0] for step in steps}:
            checked.success, checked.message = False, message
            on_step(checked.step, checked)
            return ran[: ran.index(checked) + 1]
        if len(ran) < len(steps):
            blamed = StepResult(steps[len(ran)], STEPS[steps[len(ran)]][0], False, message)
            on_step(blamed.step, blamed)
            return [*ran, blamed]
        ran[-1].success, ran[-1].message = False, message
        return ran

    def run_step(self, step: int, dataset: str | None = None, h5ad_path: Path | None = None) -> StepResult:
        return self.run_steps((step,), dataset, h5ad_path, lambda *_: None)[0]

    def discard_partial(self, dataset: str) -> list[Path]:
        """After a failed step: remove this dataset's interim folders; published outputs are
        complete by construction (atomic rename) and stay."""
        removed = self.layout.remove_dataset(dataset, INTERIM_ASSETS)
        DatasetLog(self.layout.dataset_log_dir(dataset), dataset).event(
            "cleanup", "partial interim removed after failure", removed=[str(p) for p in removed]
        )
        return removed

    def run_dataset(self, dataset: str, h5ad_path: Path, reporter: Reporter) -> list[StepResult]:
        """Steps 2-5 for one dataset in one run; stops at the first failure and cleans up after it."""
        self.register(dataset)

        def on_step(step: int, result: StepResult | None) -> None:
            reporter.step(step, result)
            if result is not None and result.success and step == 4 and not self.settings.keep_interim:
                reporter.note(f"Cleanup: interim chunks of {dataset} removed")

        results = self.run_steps(DATASET_STEPS, dataset, h5ad_path, on_step)
        failed = next((r for r in results if not r.success), None)
        if failed is not None and failed.step < 5:
            removed = self.discard_partial(dataset)
            shown = ", ".join(str(p) for p in removed) or "nothing partial was left"
            reporter.note(f"Cleanup after failure: {shown}")
        return results

    def hgnc_digest(self) -> str:
        return mapping_digest(pl.read_parquet(self.layout.hgnc_mapping_file()))

    def up_to_date(self, dataset: str, source: Path, hgnc_digest: str) -> bool:
        """Outputs made from this very file (size, mtime) with these parameters, and uploaded
        to the configured repository when there is one."""
        output = self.layout.asset_dir(OUTPUT_ASSET, dataset)
        if not is_up_to_date(output, expected_output_provenance(source, self.settings, hgnc_digest)):
            return False
        if not self.settings.repo_id:
            return True
        try:
            upload = json.loads(self.layout.upload_record(dataset).read_text())
        except (OSError, ValueError):
            return False
        wanted = f"{self.settings.repo_id}-{dataset}" if self.settings.repo_per_dataset else self.settings.repo_id
        return upload.get("status") == "uploaded" and upload.get("repo_id") == wanted

    def process_files(self, files: list[Path], reporter: Reporter, skip_existing: bool = False) -> list[DatasetOutcome]:
        """Every file is its own partition run: one failure never stops the others."""
        names, errors = datasets_by_name(files)
        refused = {Path(e.path): e for e in errors}
        reporter.step(1, None)
        hgnc = self.run_step(1)
        reporter.step(1, hgnc)
        digest = self.hgnc_digest() if hgnc.success else ""
        by_file = {path: name for name, path in names.items()}
        outcomes = []
        for index, path in enumerate(sorted(files), start=1):
            name = by_file.get(path, "")
            if path in refused:
                shown = _name_or_empty(path)
                reporter.file(index, len(files), shown or path.name)
                reporter.note(f"✗ {refused[path]}")
                outcomes.append(DatasetOutcome(shown, str(path), FAILED, refused[path].problem))
                continue
            reporter.file(index, len(files), name)
            if not hgnc.success:
                outcomes.append(DatasetOutcome(name, str(path), FAILED, f"step 1 (hgnc_mapper): {hgnc.message}"))
            elif skip_existing and self.up_to_date(name, path, digest):
                reporter.note(f"SKIPPED {name}: outputs are up to date")
                outcomes.append(DatasetOutcome(name, str(path), SKIPPED, "outputs up to date (same input file and parameters)"))
            else:
                started = time.perf_counter()
                results = self.run_dataset(name, path, reporter)
                outcomes.append(_outcome(name, path, results, time.perf_counter() - started))
        return outcomes


def _name_or_empty(path: Path) -> str:
    try:
        return dataset_name(path)
    except ValueError:
        return ""


def _outcome(dataset: str, path: Path, results: list[StepResult], seconds: float) -> DatasetOutcome:
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
        cells_read=int(figures.get("parquet_chunks", {}).get("cells", 0)),
        cells_with_age=int(figures.get("aged_chunks", {}).get("cells_with_age", 0)),
        train_cells=int(figures.get("train_test_splits", {}).get("train_cells", 0)),
        test_cells=int(figures.get("train_test_splits", {}).get("test_cells", 0)),
        seconds=round(seconds, 3),
    )

"""One Dagster run of some steps of one dataset, in this process: what a dataset's process runs.

Steps 2-5 of a dataset are one in-process run on a persistent instance (on the example, one run
per step took 6-9 s against 1.7-2.8 s for one run: Dagster's own work per run), and the runs and
partitions show up in `dagster dev` afterwards. A step command (`preprocess step3 ...`) is a run of that step alone.
Progress is reported step by step as the run goes, from the run's own events.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckSeverity,
    AssetSelection,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    JobDefinition,
    colored_console_logger,
    define_asset_job,
    in_process_executor,
    logger,
)

from dagster._core.instance.ref import InstanceRef  # how DagsterInstance.get() builds one, with overrides

from scrna_assets.checks import ALL_CHECKS
from scrna_assets.core.atomic_files import write_bytes_atomic
from scrna_assets.assets import ALL_ASSETS
from scrna_assets.io_manager import build_resources
from scrna_assets.partitions import DATASETS_PARTITIONS_NAME
from scrna_assets.progress import parse_progress_line
from scrna_assets.resources import PipelineSettings
from scrna_assets.steps import BY_NUMBER, CHECKED_ASSET, PARQUET_CHUNKS

DEFAULT_DAGSTER_HOME = ".dagster"
CLI_JOB = "preprocess_steps"
PROGRESS_LOGGER = "scrna_assets.runner.progress"
PASSED = "PASSED"
OnProgress = Callable[[int, int, int], None]
"""Hears (step, cells done, cells in all) after each chunk of a step."""
# Failures reach the user as one line from the runner; Dagster's own console log would repeat them
# with stack traces, so it is silenced unless --debug. Loggers not named in the run config are not
# started, so the progress logger is named too.
def _loggers_config(debug: bool) -> dict[str, Any]:
    return {"console": {"config": {"log_level": "DEBUG" if debug else "CRITICAL"}}, "progress": {}}


DEFAULT_INSTANCE_CONFIG = b"""telemetry:
  enabled: false
# All runs' events in one SQLite file: a per-run file costs a database set-up per run
# (about 0.35 s of a 5,000-cell dataset's ~1.3 s of Dagster time, measured in-process).
event_log_storage:
  module: dagster._core.storage.event_log
  class: ConsolidatedSqliteEventLogStorage
  config:
    base_dir:
      env: DAGSTER_HOME
"""
CLI_INSTANCE_OVERRIDES = {
    "compute_logs": {"module": "dagster._core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}
}
"""The CLI's runs do not capture their steps' stdout and stderr into files (about 0.15 s a run): the
assets log through Dagster, and anything a library prints goes to the terminal that started them.
Runs from the UI, the sensor and `dagster job execute` keep the instance's own setting."""
_INSTANCES: dict[str, DagsterInstance] = {}


def cli_instance() -> DagsterInstance:
    """The instance from ``DAGSTER_HOME``, or a persistent ``./.dagster`` (SQLite) when unset, with
    ``CLI_INSTANCE_OVERRIDES``.

    One instance per home and process, made once: a dataset process forked from the batch parent
    inherits the parent's (Dagster's SQL storages hold no open connection between calls)."""
    if not os.environ.get("DAGSTER_HOME"):
        home = Path(DEFAULT_DAGSTER_HOME).resolve()
        home.mkdir(parents=True, exist_ok=True)
        config = home / "dagster.yaml"
        if not config.exists():
            write_bytes_atomic(config, DEFAULT_INSTANCE_CONFIG)
        os.environ["DAGSTER_HOME"] = str(home)
    home = os.environ["DAGSTER_HOME"]
    if home not in _INSTANCES:
        if os.path.isabs(home) and os.path.isdir(home):
            instance = DagsterInstance.from_ref(InstanceRef.from_dir(home, overrides=CLI_INSTANCE_OVERRIDES))
            instance.compute_log_manager  # noqa: B018  (made on first use: here, not in every dataset process)
            _INSTANCES[home] = instance
        else:
            _INSTANCES[home] = DagsterInstance.get()  # Dagster's own message for a bad DAGSTER_HOME
    return _INSTANCES[home]


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


def _innermost(error: Any) -> str:
    """The innermost error's own text (Dagster prefixes it with the class's qualified name)."""
    while error.cause is not None:
        error = error.cause
    message = error.message.strip()
    prefix, _, text = message.partition(": ")
    return text if error.cls_name and prefix.endswith(error.cls_name) and text else message


def _failure_message(event: DagsterEvent) -> str:
    """The asset's own description (``Failure``) or the innermost error of a failed step."""
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    return _innermost(data.error)


def _run_failure_message(result: ExecuteInProcessResult) -> str:
    """Why a run failed outside its steps: the first error among its events (e.g. the IO manager
    that could not take the dataset's lock)."""
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            return _innermost(error)
    return "the run failed to start"


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

    def __init__(
        self, assets: dict[str, int], on_step: Callable[[int, StepResult | None], None], on_progress: OnProgress | None = None
    ) -> None:
        super().__init__(logging.DEBUG)
        self.assets = assets
        self.on_step = on_step
        self.on_progress = on_progress
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
        if event is None:
            self._progress(record)
            return
        if event.step_key not in self.assets:
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

    def _progress(self, record: logging.LogRecord) -> None:
        """An asset's per-chunk progress line in the run log (``progress.chunk_reporter``), passed on."""
        meta = getattr(record, "dagster_meta", None) or {}
        if self.on_progress is not None and meta.get("step_key") in self.assets:
            figures = parse_progress_line(str(meta.get("orig_message", "")))
            if figures is not None:
                self.on_progress(self.assets[meta["step_key"]], *figures)

    def __enter__(self) -> _StepEvents:
        log = logging.getLogger(PROGRESS_LOGGER)
        log.handlers, log.propagate = [self], False
        log.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *_: object) -> None:
        logging.getLogger(PROGRESS_LOGGER).handlers = []  # the next run brings its own handler


@logger(description="Step progress of a run, for the CLI: the handler of the run being executed.")
def _progress_logger(_init_context: Any) -> logging.Logger:
    return logging.getLogger(PROGRESS_LOGGER)


_JOBS: dict[tuple[str, tuple[int, ...]], JobDefinition] = {}
KEPT_JOBS = 8


def steps_job(settings: PipelineSettings, steps: tuple[int, ...]) -> JobDefinition:
    """The job of these steps' assets (and their checks) on these settings, built once per process:
    the CLI's batch parent builds it before forking, so the dataset processes it forks do not
    rebuild definitions (a forkserver's children, in tests and notebooks, build their own)."""
    key = (settings.model_dump_json(), steps)
    if key not in _JOBS:
        definitions = Definitions(
            assets=[*ALL_ASSETS, *ALL_CHECKS],
            jobs=[define_asset_job(CLI_JOB, selection=AssetSelection.assets(*(BY_NUMBER[step].asset for step in steps)), executor_def=in_process_executor)],
            resources=build_resources(settings),
            loggers={"console": colored_console_logger, "progress": _progress_logger},
        )
        if len(_JOBS) >= KEPT_JOBS:  # a long-lived caller (a notebook, the tests) keeps the latest few
            _JOBS.pop(next(iter(_JOBS)))
        _JOBS[key] = definitions.resolve_job_def(CLI_JOB)
    return _JOBS[key]


class PipelineRunner:
    """Materializes assets for datasets with the given settings on one instance."""

    def __init__(self, settings: PipelineSettings, instance: DagsterInstance, debug: bool = False) -> None:
        self.settings = settings
        self.instance = instance
        self.debug = debug

    def register(self, dataset: str) -> None:
        if not self.instance.has_dynamic_partition(DATASETS_PARTITIONS_NAME, dataset):
            self.instance.add_dynamic_partitions(DATASETS_PARTITIONS_NAME, [dataset])

    def run_steps(
        self, steps: tuple[int, ...], dataset: str | None, h5ad_path: Path | None, on_step: Callable[[int, StepResult | None], None],
        run_id: str | None = None, on_progress: OnProgress | None = None,
    ) -> list[StepResult]:
        """One in-process run of these steps' assets (and their checks); ``on_step`` hears each
        step start and end. Returns the results of the steps that ran, in order."""
        assets = {BY_NUMBER[step].asset: step for step in steps}
        run_config: dict[str, Any] = {"loggers": _loggers_config(self.debug)}
        if PARQUET_CHUNKS in assets and h5ad_path is not None:
            run_config["ops"] = {PARQUET_CHUNKS: {"config": {"h5ad_path": str(h5ad_path)}}}
        with _StepEvents(assets, on_step, on_progress) as events:
            result = steps_job(self.settings, steps).execute_in_process(
                run_config=run_config,
                instance=self.instance,
                partition_key=dataset,
                raise_on_error=False,
                run_id=run_id,
                tags={"scrna_assets/source": "cli"},
            )
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
        assets = {BY_NUMBER[step].asset for step in steps}
        """A run that failed outside our asset steps (a check that crashed, a run that could not
        start): the failure goes to the step the check belongs to, or the first that did not run."""
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        message = f"{failure.step_key}: {_failure_message(failure)}" if failure is not None else _run_failure_message(result)
        checked = next((r for r in ran if r.asset == CHECKED_ASSET), None)
        if checked is not None and failure is not None and failure.step_key not in assets:
            checked.success, checked.message = False, message
            on_step(checked.step, checked)
            return ran[: ran.index(checked) + 1]
        if len(ran) < len(steps):
            blamed = StepResult(steps[len(ran)], BY_NUMBER[steps[len(ran)]].asset, False, message)
            on_step(blamed.step, blamed)
            return [*ran, blamed]
        ran[-1].success, ran[-1].message = False, message
        return ran

    def run_step(self, step: int, dataset: str | None = None, h5ad_path: Path | None = None) -> StepResult:
        return self.run_steps((step,), dataset, h5ad_path, lambda *_: None)[0]

"""Run the Dagster assets for one dataset from Python: what the CLI uses, so there is one code path.

Each step is its own in-process materialization on a persistent instance, so the runs and
partitions show up in `dagster dev` afterwards.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import polars as pl
from dagster import AssetCheckSeverity, AssetSelection, DagsterInstance, ExecuteInProcessResult, materialize

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
PASSED = "PASSED"
# Failures reach the user as one line from the runner; Dagster's own console log would repeat them
# with stack traces, so it is silenced unless --debug.
QUIET_LOGGING = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


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


def _failure_message(result: ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data is not None and data.user_failure_data.description:
                return data.user_failure_data.description
            error = data.error
            while error.cause is not None:
                error = error.cause
            return error.message.strip()
    return "the run failed without a step failure"


def _checks(result: ExecuteInProcessResult) -> dict[str, str]:
    return {
        evaluation.check_name: PASSED if evaluation.passed else evaluation.severity.value
        for evaluation in result.get_asset_check_evaluations()
    }


def _figures(result: ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for materialization in result.asset_materializations_for_node(asset):
        for key, value in materialization.metadata.items():
            figures[key] = getattr(value, "value", value)
    return figures


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

    def run_step(self, step: int, dataset: str | None = None, h5ad_path: Path | None = None) -> StepResult:
        asset = STEPS[step][0]
        run_config: dict[str, Any] = {} if self.debug else dict(QUIET_LOGGING)
        if asset == "parquet_chunks" and h5ad_path is not None:
            run_config["ops"] = {"parquet_chunks": {"config": {"h5ad_path": str(h5ad_path)}}}
        result = materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            selection=AssetSelection.assets(asset),
            partition_key=dataset,
            instance=self.instance,
            resources=build_resources(self.settings),
            run_config=run_config,
            raise_on_error=False,
            tags={"scrna_assets/source": "cli"},
        )
        release_memory()
        if not result.success:
            return StepResult(step, asset, False, _failure_message(result))
        return StepResult(step, asset, True, figures=_figures(result, asset), checks=_checks(result))

    def discard_partial(self, dataset: str) -> list[Path]:
        """After a failed step: remove this dataset's interim folders; published outputs are
        complete by construction (atomic rename) and stay."""
        removed = self.layout.remove_dataset(dataset, INTERIM_ASSETS)
        DatasetLog(self.layout.dataset_log_dir(dataset), dataset).event(
            "cleanup", "partial interim removed after failure", removed=[str(p) for p in removed]
        )
        return removed

    def run_dataset(self, dataset: str, h5ad_path: Path, reporter: Reporter) -> list[StepResult]:
        """Steps 2-5 for one dataset; stops at the first failure and cleans up after it."""
        self.register(dataset)
        results = []
        for step in DATASET_STEPS:
            reporter.step(step, None)
            started = time.perf_counter()
            result = self.run_step(step, dataset, h5ad_path)
            result.figures.setdefault("seconds", round(time.perf_counter() - started, 3))
            results.append(result)
            reporter.step(step, result)
            if not result.success:
                if step < 5:
                    removed = self.discard_partial(dataset)
                    shown = ", ".join(str(p) for p in removed) or "nothing partial was left"
                    reporter.note(f"Cleanup after failure: {shown}")
                break
            if step == 4 and not self.settings.keep_interim:
                reporter.note(f"Cleanup: interim chunks of {dataset} removed")
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
        """Every file is its own set of partition runs: one failure never stops the others."""
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
        message = "; ".join(
            part for part in (
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

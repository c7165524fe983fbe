"""Run the Dagster assets for one dataset from Python: what the CLI uses, so there is one code path.

Each step is its own in-process materialization on a persistent instance, so the runs and
partitions show up in `dagster dev` afterwards.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import AssetKey, DagsterInstance, ExecuteInProcessResult, materialize

from scrna_assets.definitions import ALL_ASSETS, build_resources
from scrna_assets.layout import INTERIM_ASSETS, DatasetLayout
from scrna_assets.logs import DatasetLog
from scrna_assets.partitions import DATASETS_PARTITIONS_NAME
from scrna_assets.resources import PipelineSettings

DEFAULT_DAGSTER_HOME = ".dagster"
STEPS: dict[int, tuple[str, str]] = {
    1: ("hgnc_mapper", "Loading the HGNC gene mapping"),
    2: ("parquet_chunks", "Converting h5ad to parquet chunks of cell sentences"),
    3: ("aged_chunks", "Adding donor age from development_stage"),
    4: ("train_test_splits", "Splitting into train and test"),
    5: ("hf_upload", "Uploading to the HuggingFace Hub"),
}
DATASET_STEPS = (2, 3, 4, 5)
QUIET_LOGGING = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


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


def _figures(result: ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for materialization in result.asset_materializations_for_node(asset):
        for key, value in materialization.metadata.items():
            figures[key] = getattr(value, "value", value)
    return figures


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
            ALL_ASSETS,
            selection=[AssetKey(asset)],
            partition_key=dataset,
            instance=self.instance,
            resources=build_resources(self.settings),
            run_config=run_config,
            raise_on_error=False,
            tags={"scrna_assets/source": "cli"},
        )
        gc.collect()
        if not result.success:
            return StepResult(step, asset, False, _failure_message(result))
        return StepResult(step, asset, True, figures=_figures(result, asset))

    def discard_partial(self, dataset: str) -> list[Path]:
        """After a failed step: remove this dataset's interim folders; published outputs are
        complete by construction (atomic rename) and stay."""
        removed = self.layout.remove_dataset(dataset, INTERIM_ASSETS)
        DatasetLog(self.layout.dataset_log_dir(dataset), dataset).event(
            "cleanup", "partial interim removed after failure", removed=[str(p) for p in removed]
        )
        return removed

    def run_dataset(
        self, dataset: str, h5ad_path: Path, on_step: Callable[[int, StepResult | None], None]
    ) -> list[StepResult]:
        """Steps 2-5 for one dataset; stops at the first failure and cleans up after it."""
        self.register(dataset)
        results = []
        for step in DATASET_STEPS:
            on_step(step, None)
            started = time.perf_counter()
            result = self.run_step(step, dataset, h5ad_path)
            result.figures.setdefault("seconds", round(time.perf_counter() - started, 3))
            results.append(result)
            on_step(step, result)
            if not result.success:
                if step < 5:
                    self.discard_partial(dataset)
                break
        return results

"""The Dagster code location: `dagster dev -m scrna_assets` (settings from SCRNA_* variables)."""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from scrna_assets.assets import ALL_ASSETS
from scrna_assets.checks import ALL_CHECKS
from scrna_assets.io_manager import build_resources
from scrna_assets.jobs import dataset_job, hgnc_job
from scrna_assets.resources import PipelineSettings
from scrna_assets.settings import Settings
from scrna_assets.sensors import h5ad_file_sensor

def build_definitions(settings: PipelineSettings) -> Definitions:
    return Definitions(
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=[dataset_job, hgnc_job],
        sensors=[h5ad_file_sensor],
        resources=build_resources(settings),
        executor=in_process_executor,
    )


defs = build_definitions(PipelineSettings.of(Settings.load()))

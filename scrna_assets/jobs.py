"""Jobs for the shell (`dagster job execute`) and the UI. All run in-process: the multiprocess
executor would re-import the whole stack for every step."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job, in_process_executor

from scrna_assets.partitions import datasets_partitions
from scrna_assets.steps import HGNC_MAPPER, PARTITIONED_ASSETS

hgnc_job = define_asset_job("hgnc_job", selection=AssetSelection.assets(HGNC_MAPPER), executor_def=in_process_executor)

dataset_job = define_asset_job(
    "dataset_job",
    selection=AssetSelection.assets(*PARTITIONED_ASSETS),
    partitions_def=datasets_partitions,
    executor_def=in_process_executor,
    description="Process one dataset partition: h5ad -> chunks -> ages -> train/test -> upload.",
)

"""The one IO manager: it owns the folder layout, holds the dataset's lock for the whole run,
publishes staged folders atomically and hands downstream assets the published folder (or a clear
error when there is none)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from dagster import ConfigurableIOManager, Failure, InitResourceContext, InputContext, MetadataValue, OutputContext
from pydantic import PrivateAttr

from scrna_assets.asset_metadata import ROW_COUNT, chunk_table_metadata, table_metadata
from scrna_assets.core.atomic_files import write_bytes_atomic
from scrna_assets.core.parquet_io import chunk_files
from scrna_assets.dataset_lock import DatasetLock
from scrna_assets.layout import DatasetLayout
from scrna_assets.logs import DatasetLog
from scrna_assets.resources import PipelineSettings
from scrna_assets.run_liveness import process_tags
from scrna_assets.steps import HGNC_MAPPER, INTERIM_ASSETS, OUTPUT_ASSET

PARTITION_TAG = "dagster/partition"


@dataclass(frozen=True)
class StagedFolder:
    """A complete asset output, written to a staging folder and waiting to be published."""

    path: Path


def folder_metadata(folder: Path) -> dict[str, Any]:
    """Rows (from parquet footers, no data read), chunk files and bytes of a published folder, and
    Dagster's ``dagster/row_count`` (all rows: train and test together for the split) and
    ``dagster/column_schema`` (the first chunk file's columns)."""
    files = sorted(folder.rglob("chunk_*.parquet"))
    table = chunk_table_metadata(files)
    return {
        "path": MetadataValue.path(str(folder)),
        "rows": table[ROW_COUNT].value,
        "chunk_files": len(files),
        "bytes": sum(f.stat().st_size for f in files),
        **table,
    }


class DatasetIOManager(ConfigurableIOManager):
    settings: PipelineSettings
    _lock: DatasetLock | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Take the lock of the run's dataset before its first step: it is held until the run ends,
        so this run's publications and deletions (interim cleanup included) never meet another's.
        A run that cannot have it fails here, having written and deleted nothing. The run is also
        tagged with the process that executes it, so a run whose process dies can be found and
        marked failed (``run_liveness``)."""
        self.settings.model()  # a run config that breaks a bound or a choice fails here, before any work
        run = context.dagster_run
        if run is not None and context.instance is not None:
            context.instance.add_run_tags(run.run_id, process_tags())
        dataset = run.tags.get(PARTITION_TAG) if run is not None else None
        if dataset:
            self._lock = self.layout.lock(dataset, run.run_id)
            self._lock.acquire()

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def layout(self) -> DatasetLayout:
        s = self.settings
        return DatasetLayout.from_roots(s.interim_dir, s.output_dir, s.log_dir)

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        asset = context.asset_key.path[-1]
        if asset == HGNC_MAPPER:
            buffer = io.BytesIO()
            obj.write_parquet(buffer, compression="zstd")
            write_bytes_atomic(self.layout.hgnc_mapping_file(), buffer.getvalue())
            context.add_output_metadata({
                "path": MetadataValue.path(str(self.layout.hgnc_mapping_file())),
                **table_metadata(obj.height, obj.to_arrow().schema),
            })
            return
        dataset = context.partition_key
        if isinstance(obj, StagedFolder):
            final = self.layout.publish(obj.path, asset, dataset)
            context.add_output_metadata(folder_metadata(final))
            if asset == OUTPUT_ASSET and not self.settings.keep_interim:
                removed = self.layout.remove_dataset(dataset, INTERIM_ASSETS)
                DatasetLog(self.layout.dataset_log_dir(dataset), dataset).event(
                    "cleanup", "interim removed", removed=[str(p) for p in removed]
                )
            return
        record = self.layout.upload_record(dataset)
        write_bytes_atomic(record, json.dumps(obj, indent=2, sort_keys=True).encode())

    def load_input(self, context: InputContext) -> Any:
        asset = context.upstream_output.asset_key.path[-1]
        if asset == HGNC_MAPPER:
            path = self.layout.hgnc_mapping_file()
            if not path.exists():
                raise Failure(
                    description=f"hgnc_mapper has not been materialized (no {path}): materialize it first, "
                    "e.g. `dagster asset materialize -m scrna_assets --select hgnc_mapper`"
                )
            return pl.read_parquet(path)
        dataset = context.asset_partition_key
        folder = self.layout.asset_dir(asset, dataset)
        if not folder.exists() or (asset in INTERIM_ASSETS and not chunk_files(folder / "chunks")):
            raise Failure(
                description=f"{asset} for dataset {dataset!r} has not been materialized (no {folder}); "
                f"materialize {asset} for this partition first"
                + (" (interim folders are removed after a split unless --keep-interim)" if asset in INTERIM_ASSETS else "")
            )
        return folder


def build_resources(settings: PipelineSettings) -> dict[str, object]:
    """The resources every run needs: the settings, and the IO manager built on them."""
    return {"settings": settings, "io_manager": DatasetIOManager(settings=settings)}

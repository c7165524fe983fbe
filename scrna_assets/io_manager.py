"""The one IO manager: it owns the folder layout, publishes staged folders atomically and
hands downstream assets the published folder (or a clear error when there is none)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
from dagster import ConfigurableIOManager, Failure, InputContext, MetadataValue, OutputContext

from scrna_assets.core.parquet_io import chunk_files
from scrna_assets.layout import INTERIM_ASSETS, OUTPUT_ASSET, DatasetLayout, publish, write_bytes_atomic
from scrna_assets.logs import DatasetLog
from scrna_assets.resources import PipelineSettings


@dataclass(frozen=True)
class StagedFolder:
    """A complete asset output, written to a staging folder and waiting to be published, with the
    release of the dataset lock that the asset took and that publication ends."""

    path: Path
    release: Callable[[], None] = lambda: None


def folder_metadata(folder: Path) -> dict[str, Any]:
    """Rows (from parquet footers, no data read), chunk files and bytes of a published folder."""
    files = sorted(folder.rglob("chunk_*.parquet"))
    return {
        "path": MetadataValue.path(str(folder)),
        "rows": sum(pq.read_metadata(f).num_rows for f in files),
        "chunk_files": len(files),
        "bytes": sum(f.stat().st_size for f in files),
    }


class DatasetIOManager(ConfigurableIOManager):
    settings: PipelineSettings

    @property
    def layout(self) -> DatasetLayout:
        s = self.settings
        return DatasetLayout.from_roots(s.interim_dir, s.output_dir, s.log_dir)

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        asset = context.asset_key.path[-1]
        if asset == "hgnc_mapper":
            buffer = io.BytesIO()
            obj.write_parquet(buffer, compression="zstd")
            write_bytes_atomic(self.layout.hgnc_mapping_file(), buffer.getvalue())
            context.add_output_metadata({"path": MetadataValue.path(str(self.layout.hgnc_mapping_file()))})
            return
        dataset = context.partition_key
        if isinstance(obj, StagedFolder):
            final = self.layout.asset_dir(asset, dataset)
            try:
                publish(obj.path, final)
            finally:
                obj.release()
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
        if asset == "hgnc_mapper":
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



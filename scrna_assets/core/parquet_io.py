"""Parquet chunk folders: ``chunks/chunk_0000.parquet`` ... written in order, read back one by one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_CODECS = ("zstd", "snappy", "gzip", "brotli", "lz4", "none")
CHUNK_GLOB = "chunk_*.parquet"


def chunk_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(CHUNK_GLOB))


def iter_chunk_tables(folder: Path, columns: list[str] | None = None) -> Iterator[pa.Table]:
    for path in chunk_files(folder):
        yield pq.read_table(path, columns=columns)


class ChunkWriter:
    """Writes rows to numbered parquet files of at most ``max_rows`` rows each.

    Tables may be appended in any sizes; rows are re-cut so every file but the last is full.
    """

    def __init__(self, folder: Path, compression: str, max_rows: int) -> None:
        if compression not in PARQUET_CODECS:
            raise ValueError(f"compression must be one of {', '.join(PARQUET_CODECS)}, not {compression!r}")
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, not {max_rows}")
        self.folder = folder
        self.compression = compression
        self.max_rows = max_rows
        self.files: list[Path] = []
        self.rows_written = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        while self._pending_rows >= self.max_rows:
            combined = pa.concat_tables(self._pending, promote_options="default")
            self._flush(combined.slice(0, self.max_rows))
            rest = combined.slice(self.max_rows)
            self._pending, self._pending_rows = [rest], rest.num_rows

    def close(self, schema: pa.Schema | None = None) -> list[Path]:
        """Flush the remainder. With no rows at all, writes one empty file with ``schema``
        so readers still see the columns."""
        if self._pending_rows:
            self._flush(pa.concat_tables(self._pending, promote_options="default"))
        elif not self.files and schema is not None:
            self._flush(schema.empty_table())
        self._pending, self._pending_rows = [], 0
        return self.files

    def _flush(self, table: pa.Table) -> None:
        path = self.folder / f"chunk_{len(self.files):04d}.parquet"
        pq.write_table(table.combine_chunks(), path, compression=self.compression)
        self.files.append(path)
        self.rows_written += table.num_rows

"""ChunkWriter / chunk_files / iter_chunk_tables: numbered parquet chunk folders."""

from __future__ import annotations

import errno
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scrna_assets.core import parquet_io
from scrna_assets.core.atomic_files import WriteError
from scrna_assets.core.parquet_io import (
    MAX_ROW_GROUP_BYTES,
    PARQUET_CODECS,
    ChunkWriter,
    chunk_files,
    iter_chunk_tables,
    row_group_slices,
    write_chunk_file,
)


def rows(start: int, stop: int) -> pa.Table:
    return pa.table({"i": pa.array(range(start, stop), type=pa.int64()), "s": pa.array([f"r{k}" for k in range(start, stop)], type=pa.string())})


def row_counts(files: list[Path]) -> list[int]:
    return [pq.read_metadata(p).num_rows for p in files]


def test_rows_recut_so_every_file_but_last_is_full(tmp_path: Path) -> None:
    """Tables of any sizes are re-cut into files of exactly max_rows (the last may be shorter),
    with rows in write order."""
    writer = ChunkWriter(tmp_path / "c", "zstd", 5)
    for start, stop in [(0, 2), (2, 7), (7, 8), (8, 12), (12, 12), (12, 23)]:
        writer.write(rows(start, stop))
    files = writer.close()
    assert [p.name for p in files] == [f"chunk_{k:04d}.parquet" for k in range(5)]
    assert row_counts(files) == [5, 5, 5, 5, 3]
    assert writer.rows_written == 23
    assert pa.concat_tables(pq.read_table(p) for p in files).equals(rows(0, 23))


def test_exact_multiple_writes_no_trailing_empty_file(tmp_path: Path) -> None:
    """10 rows with max_rows=5 are two full files, no empty third file, even with a schema."""
    writer = ChunkWriter(tmp_path / "c", "zstd", 5)
    writer.write(rows(0, 10))
    files = writer.close(schema=rows(0, 0).schema)
    assert row_counts(files) == [5, 5]
    assert chunk_files(tmp_path / "c") == files


def test_one_big_table_is_split(tmp_path: Path) -> None:
    writer = ChunkWriter(tmp_path / "c", "snappy", 4)
    writer.write(rows(0, 11))
    assert row_counts(writer.close()) == [4, 4, 3]


def test_close_with_schema_and_no_rows_writes_one_empty_file(tmp_path: Path) -> None:
    """A run with no rows still leaves one readable file with the columns."""
    schema = pa.schema([("cell_id", pa.string()), ("n_genes", pa.int32())])
    writer = ChunkWriter(tmp_path / "c", "zstd", 5)
    writer.write(pa.table({"cell_id": pa.array([], pa.string()), "n_genes": pa.array([], pa.int32())}))
    files = writer.close(schema=schema)
    assert [p.name for p in files] == ["chunk_0000.parquet"]
    table = pq.read_table(files[0])
    assert table.num_rows == 0
    assert table.schema == schema


def test_close_without_schema_and_no_rows_writes_nothing(tmp_path: Path) -> None:
    writer = ChunkWriter(tmp_path / "c", "zstd", 5)
    assert writer.close() == []
    assert chunk_files(tmp_path / "c") == []
    assert (tmp_path / "c").is_dir()


def test_invalid_codec_is_value_error(tmp_path: Path) -> None:
    """An unknown codec is refused up front, and no folder is created."""
    with pytest.raises(ValueError, match="compression"):
        ChunkWriter(tmp_path / "c", "xz", 5)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("codec", PARQUET_CODECS)
def test_every_codec_round_trips(tmp_path: Path, codec: str) -> None:
    """Each allowed codec writes readable files compressed with that codec."""
    writer = ChunkWriter(tmp_path / "c", codec, 3)
    writer.write(rows(0, 4))
    files = writer.close()
    assert pa.concat_tables(pq.read_table(p) for p in files).equals(rows(0, 4))
    stored = pq.ParquetFile(files[0]).metadata.row_group(0).column(0).compression
    assert stored == ("UNCOMPRESSED" if codec == "none" else codec.upper())


@pytest.mark.parametrize("max_rows", [0, -3])
def test_non_positive_max_rows_is_value_error(tmp_path: Path, max_rows: int) -> None:
    """max_rows < 1 can never be satisfied; it must be refused up front (it used to make
    write() loop forever, writing empty files)."""
    with pytest.raises(ValueError, match="max_rows"):
        ChunkWriter(tmp_path / "c", "zstd", max_rows)


def test_chunk_files_sorted_and_filtered(tmp_path: Path) -> None:
    """Only chunk_*.parquet files, in name order (which is write order)."""
    folder = tmp_path / "c"
    writer = ChunkWriter(folder, "zstd", 2)
    writer.write(rows(0, 5))
    files = writer.close()
    (folder / "notes.txt").write_text("x")
    (folder / "other.parquet").write_bytes(b"")
    assert chunk_files(folder) == files
    assert [t.num_rows for t in iter_chunk_tables(folder)] == [2, 2, 1]
    assert [t.column_names for t in iter_chunk_tables(folder, columns=["s"])] == [["s"]] * 3
    assert chunk_files(tmp_path / "missing") == []


def test_writes_are_deterministic(tmp_path: Path) -> None:
    """The same rows give byte-identical files."""
    outputs = []
    for name in ("a", "b"):
        writer = ChunkWriter(tmp_path / name, "zstd", 3)
        writer.write(rows(0, 7))
        outputs.append([p.read_bytes() for p in writer.close()])
    assert outputs[0] == outputs[1]


# -- row groups the Hub's viewer reads, and a page index ------------------------------------------
def big_rows(n: int, width: int = 100_000) -> pa.Table:
    """``n`` rows of ``width``-byte strings (one shared buffer per column: ~n x width bytes)."""
    return pa.table({"i": pa.array(range(n), type=pa.int64()), "s": [f"{k:08d}".ljust(width, "x") for k in range(n)]})


def row_group_sizes(path: Path) -> list[int]:
    metadata = pq.ParquetFile(path).metadata
    return [metadata.row_group(g).total_byte_size for g in range(metadata.num_row_groups)]


def test_large_table_is_written_as_row_groups_of_at_most_100_mb(tmp_path: Path) -> None:
    """1,200 rows x 100 kB (~120 MB in memory) become 2 row groups, each <= 100 MB uncompressed as
    the viewer counts it, with every row back in order and a page index."""
    table = big_rows(1200)
    assert table.nbytes > MAX_ROW_GROUP_BYTES
    path = tmp_path / "chunk_0000.parquet"
    write_chunk_file(table, path, "zstd")
    sizes = row_group_sizes(path)
    assert len(sizes) == 2 and all(size <= MAX_ROW_GROUP_BYTES for size in sizes), sizes
    metadata = pq.ParquetFile(path).metadata
    assert [metadata.row_group(g).num_rows for g in range(2)] == [600, 600]
    assert all(metadata.row_group(g).column(c).has_offset_index for g in range(2) for c in range(2))
    assert pq.read_table(path).equals(table)


def test_uneven_rows_still_fit_each_row_group(tmp_path: Path) -> None:
    """Rows of very different lengths (long ones first): equal row counts would overflow the first
    row group, so it is cut shorter; rows 1-by-1 are unchanged and each group fits."""
    table = pa.concat_tables([big_rows(700, 150_000), big_rows(700, 10_000)])
    assert table.nbytes > MAX_ROW_GROUP_BYTES
    path = tmp_path / "chunk_0000.parquet"
    write_chunk_file(table, path, "snappy")
    sizes = row_group_sizes(path)
    assert len(sizes) >= 2 and all(size <= MAX_ROW_GROUP_BYTES for size in sizes), sizes
    assert pq.read_table(path).equals(table)


def test_row_group_slices_cover_the_rows() -> None:
    table = big_rows(10, 1000)
    assert row_group_slices(table) == [table]  # fits: the table itself, one row group
    parts = row_group_slices(table, target_bytes=3_500)
    assert [p.num_rows for p in parts] == [3, 3, 3, 1]  # 3 groups of 4 rows would not fit: cut to 3 each
    assert pa.concat_tables(parts).equals(table)
    assert [p.num_rows for p in row_group_slices(table, target_bytes=10)] == [1] * 10  # one row may exceed


def test_small_table_is_one_row_group_with_a_page_index(tmp_path: Path) -> None:
    """A chunk that fits: one row group, the bytes of ``pq.write_table(..., write_page_index=True)``."""
    writer = ChunkWriter(tmp_path / "c", "zstd", 100)
    writer.write(rows(0, 50))
    writer.write(rows(50, 80))  # two in-memory chunks, written as they are
    (path,) = writer.close()
    metadata = pq.ParquetFile(path).metadata
    assert metadata.num_row_groups == 1
    column = metadata.row_group(0).column(0)
    assert column.has_offset_index and column.has_column_index
    pq.write_table(pa.concat_tables([rows(0, 50), rows(50, 80)]), tmp_path / "want.parquet", compression="zstd", write_page_index=True)
    assert path.read_bytes() == (tmp_path / "want.parquet").read_bytes()


def test_failed_write_removes_the_partial_file_and_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk filling up after the first row group: a WriteError naming the file, and no partial file."""
    path = tmp_path / "chunk_0000.parquet"
    real = pq.ParquetWriter.write_table
    calls = []

    def filling_up(self, table, *args, **kwargs):
        calls.append(table.num_rows)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", filling_up)
    monkeypatch.setattr(parquet_io, "ROW_GROUP_TARGET_BYTES", 20_000)
    with pytest.raises(WriteError) as caught:
        write_chunk_file(big_rows(30, 1000), path, "zstd")  # ~30 kB: 2 row groups of 15 rows
    assert calls == [15, 15]
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(path))
    assert not path.exists()

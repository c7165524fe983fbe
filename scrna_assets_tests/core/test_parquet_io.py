"""ChunkWriter / chunk_files / iter_chunk_tables: numbered parquet chunk folders."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scrna_assets.core.parquet_io import PARQUET_CODECS, ChunkWriter, chunk_files, iter_chunk_tables


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

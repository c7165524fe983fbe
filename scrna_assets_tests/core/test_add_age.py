"""add_ages: one (cell_id, age) file per interim chunk; iter_aged_batches joins them back."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scrna_assets.core.add_age import AgeResult, add_ages, iter_aged_batches
from scrna_assets.core.convert import convert_h5ad
from scrna_assets.core.parquet_io import ChunkWriter
from scrna_assets_tests.core import h5ad_factory as factory

LABELS = [
    "23-year-old stage",
    "50-year-old human stage",  # older label form
    "3-month-old stage",
    "25-44 year-old stage",  # a range: no age
    "adult stage",  # broad: no age
    None,
    "newborn stage",
]
LABEL_AGES = [23.0, 50.0, 0.25, None, None, None, 0.0]


def interim(tmp_path: Path, h5ad: Path, chunk_size: int = 3) -> Path:
    """Convert ``h5ad`` and return its chunk folder (the input of add_ages)."""
    folder = tmp_path / "interim" / "chunks"
    convert_h5ad(h5ad, "ds", folder, factory.HGNC_MAP, chunk_size, 0, "zstd")
    return folder


def aged(tmp_path: Path, folder: Path) -> tuple[AgeResult, pa.Table]:
    """The ages of ``folder``'s cells, and the interim chunks joined with them."""
    result = add_ages(folder, tmp_path / "aged" / "chunks", "zstd")
    return result, pa.concat_tables(iter_aged_batches(folder, tmp_path / "aged" / "chunks"))


def test_age_from_development_stage_labels(tmp_path: Path) -> None:
    """Point-in-time labels give years; ranges, broad stages and missing labels give null."""
    folder = interim(tmp_path, factory.write_stages(tmp_path / "in.h5ad", LABELS, None))
    result, table = aged(tmp_path, folder)
    assert table.column_names[-1] == "age"
    assert table.schema.field("age").type == pa.float64()
    assert table.column("age").to_pylist() == LABEL_AGES
    assert (result.n_cells, result.with_age, result.without_age) == (7, 4, 3)
    assert result.age_source == "development_stage"
    assert result.age_counts == {0.0: 1, 0.25: 1, 23.0: 1, 50.0: 1}
    assert {"25-44 year-old stage", "adult stage"} <= set(result.unparsed_labels)


def test_label_column_wins_over_term_id(tmp_path: Path) -> None:
    """When both columns exist the label is used, even if the term id says otherwise; only a
    missing label falls back to the term id's label."""
    ids = ["HsapDv:0000144"] * 7  # 50-year-old stage
    folder = interim(tmp_path, factory.write_stages(tmp_path / "in.h5ad", LABELS, ids))
    result, table = aged(tmp_path, folder)
    assert result.age_source == "development_stage"
    expected = [50.0 if label is None else age for label, age in zip(LABELS, LABEL_AGES)]
    assert None in LABELS and expected != LABEL_AGES
    assert table.column("age").to_pylist() == expected


def test_age_from_ontology_term_ids(tmp_path: Path) -> None:
    """Without development_stage, the term id's ontology label (offline ontology) gives the age."""
    ids = ["HsapDv:0000117", "HsapDv:0000144", "MmusDv:0000062", "HsapDv:0000003", "unknown", None, "HsapDv:9999999"]
    folder = interim(tmp_path, factory.write_stages(tmp_path / "in.h5ad", None, ids))
    result, table = aged(tmp_path, folder)
    assert result.age_source == "development_stage_ontology_term_id"
    assert table.column("age").to_pylist() == pytest.approx([23.0, 50.0, 2 / 12, None, None, None, None])
    assert table.column("age").null_count == 4
    assert (result.with_age, result.without_age) == (3, 4)
    assert "development_stage" not in table.column_names


def test_no_stage_columns_gives_all_null(tmp_path: Path) -> None:
    """No stage information at all: age is an all-null float64 column."""
    folder = interim(tmp_path, factory.write_counts(tmp_path / "in.h5ad"))
    result, table = aged(tmp_path, folder)
    assert result.age_source == "none"
    assert table.schema.field("age").type == pa.float64()
    assert table.column("age").null_count == 7
    assert (result.n_cells, result.with_age, result.without_age) == (7, 0, 7)
    assert result.age_counts == {}


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 10])
def test_one_age_file_per_chunk_and_join_preserves_rows(tmp_path: Path, chunk_size: int) -> None:
    """Same file names, same cells in the same order, only cell_id and age; the join gives each
    chunk unchanged with ``age`` appended."""
    folder = interim(tmp_path, factory.write_stages(tmp_path / "in.h5ad", LABELS, None), chunk_size)
    before = sorted(folder.glob("chunk_*.parquet"))
    result, _ = aged(tmp_path, folder)
    assert [p.name for p in result.chunk_files] == [p.name for p in before]
    for src, ages_file in zip(before, result.chunk_files, strict=True):
        ages = pq.read_table(ages_file)
        assert ages.column_names == ["cell_id", "age"]
        assert ages.column("cell_id").equals(pq.read_table(src).column("cell_id"))
    joined = pa.concat_tables(iter_aged_batches(folder, tmp_path / "aged" / "chunks"))
    original = pa.concat_tables(pq.read_table(src) for src in before)
    assert joined.column_names == [*original.column_names, "age"]
    assert joined.drop_columns(["age"]).equals(original)
    assert joined.column("age").to_pylist() == LABEL_AGES


def test_join_of_chunks_longer_than_a_batch(tmp_path: Path) -> None:
    """Chunks of 2,500 and 1,100 cells come back in pieces of at most 1,024 rows, each with the
    ages of its own cells."""
    n = 3600
    labels = [LABELS[i % len(LABELS)] for i in range(n)]
    folder = tmp_path / "interim" / "chunks"
    writer = ChunkWriter(folder, "zstd", 2500)
    writer.write(pa.table({"cell_id": [f"c{i}" for i in range(n)], "development_stage": labels}))
    writer.close()
    result, joined = aged(tmp_path, folder)
    pieces = list(iter_aged_batches(folder, tmp_path / "aged" / "chunks"))
    assert [p.num_rows for p in pieces] == [1024, 1024, 452, 1024, 76]
    assert joined.column("cell_id").to_pylist() == [f"c{i}" for i in range(n)]
    assert joined.column("age").to_pylist() == [LABEL_AGES[i % len(LABEL_AGES)] for i in range(n)]
    assert (result.n_cells, result.with_age) == (n, 2058)


def test_join_refuses_ages_of_other_chunks(tmp_path: Path) -> None:
    """Interim chunks converted again (another chunk size, or other cells) after the ages were
    written: the join stops with a message instead of mislabelling cells."""
    h5ad = factory.write_stages(tmp_path / "in.h5ad", LABELS, None)
    folder = interim(tmp_path, h5ad, 3)
    aged(tmp_path, folder)
    ages = tmp_path / "aged" / "chunks"
    reconverted = tmp_path / "again" / "chunks"
    convert_h5ad(h5ad, "ds", reconverted, factory.HGNC_MAP, 4, 0, "zstd")
    with pytest.raises(ValueError, match=r"\(2 files\): materialize aged_chunks again"):
        list(iter_aged_batches(reconverted, ages))
    other = tmp_path / "other" / "chunks"
    ChunkWriter(other, "zstd", 3).write(pa.table({"cell_id": [f"x{i}" for i in range(3)]}))
    for name in ("chunk_0001.parquet", "chunk_0002.parquet"):
        (other / name).write_bytes((folder / name).read_bytes())
    with pytest.raises(ValueError, match="chunk_0000.parquet does not hold the cells of"):
        list(iter_aged_batches(other, ages))
    # the same first cells but one fewer: the ages file has a cell the chunk lacks
    pq.write_table(pq.read_table(folder / "chunk_0000.parquet").slice(0, 2), other / "chunk_0000.parquet")
    with pytest.raises(ValueError, match="chunk_0000.parquet does not hold the cells of"):
        list(iter_aged_batches(other, ages))


def test_obs_age_clash_keeps_both(tmp_path: Path) -> None:
    """An obs column called age was kept as obs_age by convert; add_ages adds the real age."""
    path = tmp_path / "in.h5ad"
    factory.write_obs_clash(path, ("age",))
    folder = interim(tmp_path, path)
    _, table = aged(tmp_path, folder)
    assert table.column("obs_age").to_pylist() == [f"age-{i}" for i in range(7)]
    assert table.column("age").null_count == 7


def test_zero_cells_still_one_file_with_age(tmp_path: Path) -> None:
    """A 0-cell interim (one empty file) gives one empty file with the age column."""
    folder = interim(tmp_path, factory.write_zero_cells(tmp_path / "zero.h5ad"))
    result, table = aged(tmp_path, folder)
    assert [p.name for p in result.chunk_files] == ["chunk_0000.parquet"]
    assert table.num_rows == 0
    assert table.schema.field("age").type == pa.float64()
    assert result.n_cells == 0


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    """No interim chunks at all is a mistake upstream, not an empty dataset."""
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="no parquet chunks"):
        add_ages(tmp_path / "nothing", tmp_path / "out", "zstd")


def test_stage_column_with_unexpected_whitespace_and_case(tmp_path: Path) -> None:
    """Labels are matched after trimming and lower-casing (what curators actually typed)."""
    folder = tmp_path / "in"
    writer = ChunkWriter(folder, "zstd", 10)
    writer.write(pa.table({"cell_id": ["a", "b", "c"], "development_stage": [" 23-Year-Old Stage ", "80 year-old stage", "10-month-old stage"]}))
    writer.close()
    _, table = aged(tmp_path, folder)
    assert table.column("age").to_pylist() == pytest.approx([23.0, 80.0, 10 / 12])


def test_real_perturbseq_age_23(tmp_path: Path, shared_data: Path) -> None:
    """The schema-7.1 file: every cell is 23 years old; 4 chunks of 128 stay 4 chunks."""
    folder = tmp_path / "interim" / "chunks"
    convert_h5ad(shared_data / "h5ad" / "cxg_schema7.1_small_perturbations_marson_cd4_perturbseq.h5ad", "p", folder, {}, 128, 0, "zstd")
    result, table = aged(tmp_path, folder)
    assert [pq.read_metadata(p).num_rows for p in result.chunk_files] == [128, 128, 128, 116]
    assert (result.n_cells, result.with_age, result.age_source) == (500, 500, "development_stage")
    assert result.age_counts == {23.0: 500}
    assert set(table.column("age").to_pylist()) == {23.0}


def test_real_heart_term_ids_only_carnegie_stage_is_null(tmp_path: Path, shared_data: Path) -> None:
    """The unlabeled heart file has only term ids (HsapDv:0000003 = Carnegie stage 01): no age."""
    folder = tmp_path / "interim" / "chunks"
    convert_h5ad(shared_data / "h5ad" / "cxg_schema7_example_valid_unlabeled_heart320.h5ad", "h", folder, {}, 128, 0, "zstd")
    result, table = aged(tmp_path, folder)
    assert result.age_source == "development_stage_ontology_term_id"
    assert (result.n_cells, result.with_age, result.without_age) == (320, 0, 320)
    assert result.unparsed_labels == {"Carnegie stage 01": 320}
    assert len(result.chunk_files) == 3

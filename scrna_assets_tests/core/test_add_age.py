"""add_ages: one (cell_id, age, age_min, age_max) file per interim chunk; iter_aged_batches joins
them back."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scrna_assets.core.add_age import AGE_COLUMNS, AgeResult, add_ages, iter_aged_batches
from scrna_assets.core.convert import convert_h5ad
from scrna_assets.core.parquet_io import ChunkWriter
from scrna_assets_tests.core import h5ad_factory as factory

LABELS = [
    "23-year-old stage",
    "50-year-old human stage",  # older label form
    "3-month-old stage",
    "25-44 year-old stage",  # a range: no age, bounds [25, 45)
    "adult stage",  # broad: nothing
    None,
    "newborn stage",  # age 0, no stated span
]
LABEL_AGES = [23.0, 50.0, 0.25, None, None, None, 0.0]
LABEL_MINS = [23.0, 50.0, 0.25, 25.0, None, None, 0.0]
LABEL_MAXS = [24.0, 51.0, 4 / 12, 45.0, None, None, None]
STAGE_ID = "development_stage_ontology_term_id"


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
    """Point-in-time labels give years; a range gives only bounds; broad stages and missing
    labels give null in all three columns."""
    folder = interim(tmp_path, factory.write_stages(tmp_path / "in.h5ad", LABELS, None))
    result, table = aged(tmp_path, folder)
    assert table.column_names[-3:] == ["age", "age_min", "age_max"]
    assert all(table.schema.field(name).type == pa.float64() for name in AGE_COLUMNS)
    assert table.column("age").to_pylist() == LABEL_AGES
    assert table.column("age_min").to_pylist() == LABEL_MINS
    assert table.column("age_max").to_pylist() == LABEL_MAXS
    assert (result.n_cells, result.with_age, result.without_age, result.with_bounds) == (7, 4, 3, 1)
    assert result.age_source == "development_stage"
    assert result.age_counts == {0.0: 1, 0.25: 1, 23.0: 1, 50.0: 1}
    assert result.unparsed_labels == {"25-44 year-old stage": 1, "adult stage": 1, "None": 1}
    assert result.label_kinds == {"missing": 1, "newborn": 1, "no_age": 1, "point": 3, "range": 1}
    assert list(result.label_kinds) == sorted(result.label_kinds)
    assert (result.out_of_range, result.notes) == (0, [])


def test_term_id_wins_over_label(tmp_path: Path) -> None:
    """When both columns exist the term id is read first (it is what CELLxGENE validates); the
    free-text label counts only where the id is missing, unknown or says nothing."""
    ids = ["HsapDv:0000144", "unknown", None, "HsapDv:0000258", "HsapDv:9999999", "HsapDv:0000003", "HsapDv:0000240"]
    # 50-year-old stage; no stage; none; adult stage; not a term; Carnegie stage 01; sixth decade
    folder = interim(tmp_path, factory.write_stages(tmp_path / "in.h5ad", LABELS, ids))
    result, table = aged(tmp_path, folder)
    assert result.age_source == "development_stage_ontology_term_id"
    assert table.column("age").to_pylist() == [50.0, 50.0, 0.25, None, None, None, None]
    assert table.column("age_min").to_pylist() == [50.0, 50.0, 0.25, 25.0, None, None, 50.0]
    assert table.column("age_max").to_pylist() == [51.0, 51.0, 4 / 12, 45.0, None, None, 60.0]
    assert result.label_kinds == {"no_age": 1, "point": 3, "prenatal": 1, "range": 2}
    assert result.unparsed_labels == {"25-44 year-old stage": 1, "adult stage": 1, "Carnegie stage 01": 1, "sixth decade stage": 1}
    assert (result.with_age, result.with_bounds) == (3, 2)


def test_age_from_ontology_term_ids(tmp_path: Path) -> None:
    """Without development_stage, the term id's ontology label (offline ontology) gives the age."""
    ids = ["HsapDv:0000117", "HsapDv:0000144", "MmusDv:0000062", "HsapDv:0000003", "unknown", None, "HsapDv:9999999"]
    folder = interim(tmp_path, factory.write_stages(tmp_path / "in.h5ad", None, ids))
    result, table = aged(tmp_path, folder)
    assert result.age_source == "development_stage_ontology_term_id"
    assert table.column("age").to_pylist() == [23.0, 50.0, 2 / 12, None, None, None, None]
    assert table.column("age_min").to_pylist() == [23.0, 50.0, 2 / 12, None, None, None, None]
    assert table.column("age_max").to_pylist() == [24.0, 51.0, 3 / 12, None, None, None, None]
    assert (result.with_age, result.without_age, result.with_bounds) == (3, 4, 0)
    assert result.label_kinds == {"missing": 2, "no_age": 1, "point": 3, "prenatal": 1}
    assert "development_stage" not in table.column_names


def test_no_stage_columns_gives_all_null(tmp_path: Path) -> None:
    """No stage information at all: age is an all-null float64 column."""
    folder = interim(tmp_path, factory.write_counts(tmp_path / "in.h5ad"))
    result, table = aged(tmp_path, folder)
    assert result.age_source == "none"
    for name in AGE_COLUMNS:
        assert table.schema.field(name).type == pa.float64()
        assert table.column(name).null_count == 7
    assert (result.n_cells, result.with_age, result.without_age, result.with_bounds) == (7, 0, 7, 0)
    assert result.age_counts == {}
    assert result.label_kinds == {"missing": 7}


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 10])
def test_one_age_file_per_chunk_and_join_preserves_rows(tmp_path: Path, chunk_size: int) -> None:
    """Same file names, same cells in the same order, only cell_id and the three age columns; the
    join gives each chunk unchanged with them appended."""
    folder = interim(tmp_path, factory.write_stages(tmp_path / "in.h5ad", LABELS, None), chunk_size)
    before = sorted(folder.glob("chunk_*.parquet"))
    result, _ = aged(tmp_path, folder)
    assert [p.name for p in result.chunk_files] == [p.name for p in before]
    for src, ages_file in zip(before, result.chunk_files, strict=True):
        ages = pq.read_table(ages_file)
        assert ages.column_names == ["cell_id", "age", "age_min", "age_max"]
        assert all(ages.schema.field(name).type == pa.float64() for name in AGE_COLUMNS)
        assert ages.column("cell_id").equals(pq.read_table(src).column("cell_id"))
    joined = pa.concat_tables(iter_aged_batches(folder, tmp_path / "aged" / "chunks"))
    original = pa.concat_tables(pq.read_table(src) for src in before)
    assert joined.column_names == [*original.column_names, "age", "age_min", "age_max"]
    assert joined.drop_columns(list(AGE_COLUMNS)).equals(original)
    assert joined.column("age").to_pylist() == LABEL_AGES
    assert joined.column("age_min").to_pylist() == LABEL_MINS
    assert joined.column("age_max").to_pylist() == LABEL_MAXS


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
    assert joined.column("age_max").to_pylist() == [LABEL_MAXS[i % len(LABEL_MAXS)] for i in range(n)]
    assert (result.n_cells, result.with_age, result.with_bounds) == (n, 2058, 514)


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


def test_join_refuses_ages_without_bounds(tmp_path: Path) -> None:
    """Age files written before age_min/age_max existed: the join asks for them to be made again."""
    folder = interim(tmp_path, factory.write_stages(tmp_path / "in.h5ad", LABELS, None))
    aged(tmp_path, folder)
    ages = tmp_path / "aged" / "chunks"
    for path in ages.glob("chunk_*.parquet"):
        pq.write_table(pq.read_table(path).select(["cell_id", "age"]), path)
    with pytest.raises(ValueError, match="lacks age_min, age_max: materialize aged_chunks again"):
        list(iter_aged_batches(folder, ages))


def test_obs_age_clash_keeps_both(tmp_path: Path) -> None:
    """An obs column called age was kept as obs_age by convert; add_ages adds the real age."""
    path = tmp_path / "in.h5ad"
    factory.write_obs_clash(path, ("age",))
    folder = interim(tmp_path, path)
    _, table = aged(tmp_path, folder)
    assert table.column("obs_age").to_pylist() == [f"age-{i}" for i in range(7)]
    assert table.column("age").null_count == 7
    assert table.column_names[-3:] == ["age", "age_min", "age_max"]


def test_zero_cells_still_one_file_with_age(tmp_path: Path) -> None:
    """A 0-cell interim (one empty file) gives one empty file with the age column."""
    folder = interim(tmp_path, factory.write_zero_cells(tmp_path / "zero.h5ad"))
    result, table = aged(tmp_path, folder)
    assert [p.name for p in result.chunk_files] == ["chunk_0000.parquet"]
    assert table.num_rows == 0
    assert all(table.schema.field(name).type == pa.float64() for name in AGE_COLUMNS)
    assert result.n_cells == 0
    assert (result.label_kinds, result.notes) == ({}, [])


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
    assert table.column("age").to_pylist() == [23.0, 80.0, 10 / 12]
    assert table.column("age_max").to_pylist() == [24.0, 81.0, 11 / 12]


def test_bounds_of_ranges_censored_and_newborn_stages(tmp_path: Path) -> None:
    """The issue's examples through a chunk: the bounds land in age_min/age_max, age stays null
    except for points and the newborn."""
    labels = ["15-19 year-old stage", "sixth decade stage", "nursing stage (0-11 months)", "80 year-old and over stage",
              "centenarian stage", "newborn stage (0-28 days)", "Theiler stage 27", "Carnegie stage 23"]
    folder = tmp_path / "in"
    writer = ChunkWriter(folder, "zstd", 10)
    writer.write(pa.table({"cell_id": [f"c{i}" for i in range(len(labels))], "development_stage": labels}))
    writer.close()
    result, table = aged(tmp_path, folder)
    assert table.column("age").to_pylist() == [None, None, None, None, None, 0.0, 0.0, None]
    assert table.column("age_min").to_pylist() == [15.0, 50.0, 0.0, 80.0, 100.0, 0.0, 0.0, None]
    assert table.column("age_max").to_pylist() == [20.0, 60.0, 1.0, None, None, 28 / 365.25, None, None]
    assert result.label_kinds == {"censored": 2, "newborn": 2, "prenatal": 1, "range": 3}
    assert (result.with_age, result.with_bounds, result.without_age) == (2, 5, 6)


def test_out_of_range_ages_are_null_with_a_note(tmp_path: Path) -> None:
    """1e21 years is a typo: null in all three columns, counted, and named in a note."""
    huge = "999999999999999999999-year-old stage"
    folder = tmp_path / "in"
    writer = ChunkWriter(folder, "zstd", 10)
    writer.write(pa.table({"cell_id": ["a", "b", "c", "d", "e"], "development_stage": [huge, "23-year-old stage", huge, huge, "200+ years"]}))
    writer.close()
    result, table = aged(tmp_path, folder)
    for name in AGE_COLUMNS:
        assert table.column(name).to_pylist()[::2] == [None, None, None]
    assert table.column("age").to_pylist()[1] == 23.0
    assert result.out_of_range == 4
    assert result.label_kinds == {"out_of_range": 4, "point": 1}
    assert result.notes == [
        "4 cells: age outside [0, 150) years set to null: '999999999999999999999-year-old stage', '200+ years'"
    ]
    assert (result.with_age, result.with_bounds) == (1, 0)


def test_long_out_of_range_labels_are_shortened_in_the_note(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    writer = ChunkWriter(folder, "zstd", 10)
    labels = [f"{'9' * 50}-year-old stage", "151-year-old stage", "152-year-old stage", "153-year-old stage", "153-year-old stage"]
    writer.write(pa.table({"cell_id": [f"c{i}" for i in range(5)], "development_stage": labels}))
    writer.close()
    result, _ = aged(tmp_path, folder)
    assert result.notes == [
        f"5 cells: age outside [0, 150) years set to null: '153-year-old stage', '{'9' * 39}\N{HORIZONTAL ELLIPSIS}', "
        "'151-year-old stage' and 1 more labels"
    ]


@pytest.mark.parametrize(("values", "dtype"), [([23, 40, 23, 5, 1, 2, 3], "int64"), ([23.0, 40.5, None, 5.0, 1.0, 2.0, 3.0], "double")])
def test_numeric_stage_column_gives_no_age_and_says_why(tmp_path: Path, values: list, dtype: str) -> None:
    """An int or float development_stage obs column is no stage label: no error, null ages, and
    a note for the log."""
    obs = pd.DataFrame({"development_stage": values, "donor_id": [f"d{i}" for i in range(7)]}, index=factory.CELL_IDS)
    folder = interim(tmp_path, factory.write_counts(tmp_path / "in.h5ad", "csr", obs=obs))
    result, table = aged(tmp_path, folder)
    for name in AGE_COLUMNS:
        assert table.column(name).null_count == 7
    assert result.notes == [f"development_stage is numeric ({dtype}): its values give no age"]
    assert result.with_age == 0
    assert result.label_kinds.get("not_text", 0) == sum(v is not None for v in values)


def test_numeric_stage_column_with_term_ids_uses_the_ids(tmp_path: Path) -> None:
    """The term id is read first, so a numeric label column does not hide a valid id."""
    folder = tmp_path / "in"
    writer = ChunkWriter(folder, "zstd", 10)
    writer.write(pa.table({"cell_id": ["a", "b"], "development_stage": [1, 2], STAGE_ID: ["HsapDv:0000117", None]}))
    writer.close()
    result, table = aged(tmp_path, folder)
    assert table.column("age").to_pylist() == [23.0, None]
    assert result.label_kinds == {"not_text": 1, "point": 1}
    assert result.notes == ["development_stage is numeric (int64): its values give no age"]


def test_real_perturbseq_age_23(tmp_path: Path, shared_data: Path) -> None:
    """The schema-7.1 file: every cell is 23 years old; 4 chunks of 128 stay 4 chunks."""
    folder = tmp_path / "interim" / "chunks"
    convert_h5ad(shared_data / "h5ad" / "cxg_schema7.1_small_perturbations_marson_cd4_perturbseq.h5ad", "p", folder, {}, 128, 0, "zstd")
    result, table = aged(tmp_path, folder)
    assert [pq.read_metadata(p).num_rows for p in result.chunk_files] == [128, 128, 128, 116]
    assert (result.n_cells, result.with_age, result.age_source) == (500, 500, "development_stage_ontology_term_id")
    assert result.age_counts == {23.0: 500}
    assert set(table.column("age").to_pylist()) == {23.0}
    assert (set(table.column("age_min").to_pylist()), set(table.column("age_max").to_pylist())) == ({23.0}, {24.0})
    assert result.label_kinds == {"point": 500}


def test_real_heart_term_ids_only_carnegie_stage_is_null(tmp_path: Path, shared_data: Path) -> None:
    """The unlabeled heart file has only term ids (HsapDv:0000003 = Carnegie stage 01): no age."""
    folder = tmp_path / "interim" / "chunks"
    convert_h5ad(shared_data / "h5ad" / "cxg_schema7_example_valid_unlabeled_heart320.h5ad", "h", folder, {}, 128, 0, "zstd")
    result, table = aged(tmp_path, folder)
    assert result.age_source == "development_stage_ontology_term_id"
    assert (result.n_cells, result.with_age, result.without_age) == (320, 0, 320)
    assert result.unparsed_labels == {"Carnegie stage 01": 320}
    assert result.label_kinds == {"prenatal": 320}
    assert table.column("age_min").null_count == table.column("age_max").null_count == 320
    assert len(result.chunk_files) == 3

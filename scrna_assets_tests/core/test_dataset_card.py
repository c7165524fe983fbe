"""Tests for ``scrna_assets.core.dataset_card``: the card a scientist reads, cites and loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard

from scrna_assets.core.dataset_card import CELL2SENTENCE_CITATION, dataset_card, published_splits, write_dataset_card

CITATION = "Publication: https://doi.org/10.1000/xyz Dataset Version: https://datasets.cellxgene.cziscience.com/abc.h5ad"


def details(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "input": {"path": "/home/someone/data/input/lung.h5ad", "size": 2048, "mtime_ns": 1},
        "source": {"title": "Ageing lung atlas", "schema_version": "7.1.0", "organism": "Homo sapiens"},
        "parameters": {"top_genes": 2000, "tie_break": "random", "seed": 42, "test_size": 0.05, "split_by": "auto",
                       "include_age_ranges": False, "primary_only": False, "license": "other"},
        "figures": {
            "cells": 7, "matrix_used": "raw.X", "matrix_encoding": "csr", "matrix_dtype": "float32",
            "matrix_integer_values": True, "cells_with_age": 5, "cells_without_age": 2,
            "age_label_kinds": {"point": 5, "range": 1, "prenatal": 1},
            "split_by": "donor", "split_note": "", "train_cells": 5, "test_cells": 0, "train_donors": 1,
            "test_donors": 0, "donors_in_both": 0, "primary_cells": 4, "non_primary_cells": 1, "non_primary_dropped": 0,
        },
    }
    for key, value in changes.items():
        record[key] = {**record[key], **value}
    return record


def write_split(folder: Path, split: str, ages: list[float]) -> None:
    path = folder / split / "chunks" / "chunk_0000.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(ages)
    pq.write_table(pa.table({
        "cell_id": [f"{split}{i}" for i in range(n)],
        "cell_sentence": ["ACTB GAPDH"] * n,
        "n_genes": pa.array([2] * n, pa.int32()),
        "age": pa.array(ages, pa.float64()),
        "age_min": pa.array(ages, pa.float64()),
        "age_max": pa.array([a + 1 for a in ages], pa.float64()),
        "donor_id": ["d1"] * n,
    }), path)


@pytest.fixture
def one_donor(tmp_path: Path) -> Path:
    """A published folder of one donor: 5 train cells, an empty test split."""
    folder = tmp_path / "lung"
    write_split(folder, "train", [23.0, 23.0, 23.0, 23.0, 23.0])
    write_split(folder, "test", [])
    return folder


def test_empty_split_is_not_declared(one_donor: Path) -> None:
    assert [(s.name, s.rows) for s in published_splits(one_donor)] == [("train", 5)]
    card = dataset_card(one_donor, details())
    assert card.data.configs == [{"config_name": "default", "data_files": [{"split": "train", "path": "train/chunks/*.parquet"}]}]


def test_license_without_citation_is_unknown_or_as_declared(one_donor: Path) -> None:
    card = dataset_card(one_donor, details())
    assert card.data.license == "other"
    assert "Unknown: the source file does not state its license." in card.text
    declared = dataset_card(one_donor, details(parameters={"license": "cc0-1.0"}))
    assert declared.data.license == "cc0-1.0"
    assert "`cc0-1.0`, as declared with `--license`" in declared.text


def test_cellxgene_citation_means_cc_by_4_0_and_is_cited(one_donor: Path) -> None:
    card = dataset_card(one_donor, details(source={"citation": CITATION}, parameters={"license": "cc0-1.0"}))
    assert card.data.license == "cc-by-4.0"
    assert f"> {CITATION}" in card.text
    assert f"> {CELL2SENTENCE_CITATION}" in card.text


def test_card_states_source_matrix_rules_split_and_limitations(one_donor: Path) -> None:
    text = dataset_card(one_donor, details()).text
    for line in (
        "| Source file | `lung.h5ad` (2,048 bytes) |",
        "| Title | Ageing lung atlas |",
        "| CELLxGENE schema version | 7.1.0 |",
        "| Organism(s) | Homo sapiens |",
        "- Matrix: `raw.X` (csr, float32), which held integer values (counts).",
        "ties (equal values) are broken by a pseudo-random order that depends only on the seed (42), the dataset name, the cell id and the gene symbol",
        "at most the top 2000 genes with a value > 0",
        "  - one point in time (`N-year-old stage`, months, weeks, days): `age` and its unit as bounds: 5",
        "  - a range (`15-19 year-old stage`, decades): bounds only, `age` null: 1",
        "  - prenatal (Carnegie, Theiler 1-26, embryonic day): no age: 1",
        "This dataset keeps cells with a point age; cells with bounds only are left out.",
        "- Split by donor (`donor_id`): all cells of a donor are in the same split, so no age label leaks from train to test, "
        "target test share 0.05, seed 42. Donors: 1 in train, 0 in test, 0 in both.",
        "- Donor ids are unique only within one source dataset: the same person in two datasets can land on different sides when datasets are combined.",
        "- Cells marked `is_primary_data = False` also appear in another dataset",
        "| Cells marked is_primary_data = False (also in another dataset) | 1 |",
        "| Rows in `train` (counted in the parquet files) | 5 |",
        "| Youngest point age (years) | 23 |",
        "| tie_break | random |",
    ):
        assert line in text, line
    assert "/home/someone" not in text  # the file's name, never its local path
    assert "label leakage" not in text


def test_cell_mode_card_says_donors_may_leak(one_donor: Path) -> None:
    note = "split by cell: cells of one donor may be in both splits (no donor_id column)"
    text = dataset_card(one_donor, details(figures={"split_by": "cell", "split_note": note, "donors_in_both": 1})).text
    assert "- Split by cell: cells of one donor may be in both splits (no donor_id column), target test share 0.05, seed 42" in text
    assert "label leakage for an age model" in text


def test_non_integer_matrix_and_position_ties_are_stated(one_donor: Path) -> None:
    text = dataset_card(one_donor, details(figures={"matrix_integer_values": False}, parameters={"tie_break": "position"})).text
    assert "which held non-integer values (normalized: per-cell scaling keeps each cell's ranking" in text
    assert "ties keep the gene order of the source file (`--tie-break position`)" in text


def test_written_card_loads_locally_with_datasets(one_donor: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``load_dataset(<folder>)`` finds the splits the card declares (no empty test split)."""
    monkeypatch.setenv("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import datasets

    path = write_dataset_card(one_donor, details(), "lung")
    assert path == one_donor / "README.md"
    assert DatasetCard.load(path).data.license == "other"
    loaded = datasets.load_dataset(str(one_donor), cache_dir=str(tmp_path / "cache"))
    assert {name: split.num_rows for name, split in loaded.items()} == {"train": 5}
    assert loaded["train"]["age_max"] == [24.0] * 5


def test_card_names_the_dataset_not_its_staging_folder(tmp_path: Path) -> None:
    """Step 4 writes the card in a staging folder: the card names the dataset."""
    staging = tmp_path / ".staging-lung+0123456789ab"
    write_split(staging, "train", [30.0])
    text = str(dataset_card(staging, details(), name="lung"))
    assert "# lung\n" in text and 'load_dataset("data/output/lung")' in text and "pretty_name: lung cell sentences" in text
    assert ".staging" not in text


def test_card_is_deterministic(one_donor: Path) -> None:
    assert str(dataset_card(one_donor, details())) == str(dataset_card(one_donor, details()))

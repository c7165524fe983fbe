"""`preprocess` as a user runs it: banners, exit codes, one clear line for bad input."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from scrna_assets.cli import app


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder with DAGSTER_HOME unset, as on a fresh checkout."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("SCRNA_HGNC_FILE", raising=False)
    yield tmp_path
    os.environ.pop("DAGSTER_HOME", None)  # the CLI sets it for its own process


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_run_all_example(in_tmp: Path) -> None:
    result = invoke("run-all", "--example")
    assert result.exit_code == 0, result.output
    for step in range(1, 6):
        assert f"STEP {step}:" in result.output and f"✓ Step {step} complete" in result.output
    assert "cells=3000, chunks=1, genes_mapped_hgnc=1160, genes_fallback=39, genes_dropped=9, empty_sentences=48" in result.output
    assert "split_by=donor, train_cells=2599, test_cells=145" in result.output
    assert pl.read_parquet(in_tmp / "data/output/example_cellxgene/train/chunks").height == 2599
    assert not (in_tmp / "data/interim/parquet_chunks/example_cellxgene").exists()
    # the persistent instance in ./.dagster keeps the partition and the runs for `dagster dev`
    from dagster import AssetKey, DagsterEventType, DagsterInstance

    with DagsterInstance.from_config(str(in_tmp / ".dagster")) as instance:
        assert instance.get_dynamic_partitions("datasets") == ["example_cellxgene"]
        # one run for the unpartitioned HGNC step, then one run for the dataset's steps 2-5
        runs = instance.get_runs()
        assert [run.tags.get("dagster/partition") for run in reversed(runs)] == [None, "example_cellxgene"]
        materialized = instance.all_logs(runs[0].run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
        assert [event.dagster_event.asset_key for event in materialized] == [
            AssetKey(name) for name in ("parquet_chunks", "aged_chunks", "train_test_splits", "hf_upload")
        ]


def test_missing_file_is_one_line_exit_1(in_tmp: Path) -> None:
    result = CliRunner().invoke(app, ["run-all", "nothing.h5ad"])
    assert result.exit_code == 1
    assert result.output.strip() == f"✗ {in_tmp / 'data/input/nothing.h5ad'}: no such file"


def test_bad_input_fails_without_traceback(shared_data: Path, in_tmp: Path) -> None:
    path = shared_data / "h5ad" / "tiledbsoma_pbmc3k_processed_no_X.h5ad"
    result = CliRunner().invoke(app, ["run-all", str(path), "--offline"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    expected = f"✗ tiledbsoma_pbmc3k_processed_no_X: step 2 (parquet_chunks): {path}: has no count matrix"
    assert expected in result.output
    assert not (in_tmp / "data/output/tiledbsoma_pbmc3k_processed_no_X").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--test-size", "1.5"], "--test-size must be between 0 and 1, exclusive (got 1.5)"),
        (["--chunk-size", "0"], "--chunk-size must be >= 1 (got 0)"),
        (["--top-genes", "-1"], "--top-genes must be >= 0, 0 meaning all genes (got -1)"),
        (["--compression", "rar"], "--compression must be one of zstd, snappy, gzip, brotli, lz4, none (got 'rar')"),
        (["--split-by", "tissue"], "--split-by must be one of auto, donor, cell (got 'tissue')"),
        (["--tie-break", "alphabet"], "--tie-break must be one of random, position (got 'alphabet')"),
        (["--repo-id", "me/data"], "--repo-id needs a token: pass --token or set HF_TOKEN"),
    ],
)
def test_options_are_validated_up_front(in_tmp: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["run-all", "x.h5ad", *args])
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: {message}"
    assert not (in_tmp / ".dagster").exists()


def test_register_refuses_collisions(in_tmp: Path) -> None:
    folder = in_tmp / "data" / "input"
    folder.mkdir(parents=True)
    for name in ("a b.h5ad", "a_b.h5ad", "good.h5ad"):
        (folder / name).write_bytes(b"")
    result = CliRunner().invoke(app, ["register"])
    assert result.exit_code == 1
    assert f"registered good <- {folder / 'good.h5ad'}" in result.output
    assert result.output.count("is shared by a b.h5ad, a_b.h5ad") == 2


def test_step_line_names_the_failed_checks(capsys: pytest.CaptureFixture[str]) -> None:
    from scrna_assets.cli import EchoReporter
    from scrna_assets.runner import StepResult

    figures = {"split_by": "donor", "train_cells": 8, "test_cells": 2, "seconds": 0.5}
    checks = {"chunk_files_readable": "PASSED", "no_donor_in_both_splits": "ERROR", "test_share_within_contract": "WARN"}
    EchoReporter().step(4, StepResult(4, "train_test_splits", True, figures=figures, checks=checks))
    assert capsys.readouterr().out.splitlines() == [
        "  split_by=donor, train_cells=8, test_cells=2",
        "  ✗ check no_donor_in_both_splits failed (ERROR)",
        "  ✗ check test_share_within_contract failed (WARN)",
        "✓ Step 4 complete",
    ]


def test_real_cellxgene_file_with_default_options_succeeds(shared_data: Path, in_tmp: Path) -> None:
    """The CellxGene 7.1 fixture (one donor, one stage) with default options: split by donor, the
    whole dataset in train, no donor on both sides, exit 0; its card loads with ``datasets``."""
    path = shared_data / "h5ad" / "cxg_schema7.1_small_perturbations_marson_cd4_perturbseq.h5ad"
    result = invoke("run-all", str(path), "--offline", "--hgnc-file", str(shared_data / "hgnc" / "hgnc_complete_set.parquet"))
    assert result.exit_code == 0, result.output
    assert "split_by=donor, train_cells=500, test_cells=0, test_share=0.0, train_donors=1, test_donors=0, donors_in_both=0" in result.output
    assert "✗ check" not in result.output
    name = "cxg_schema7.1_small_perturbations_marson_cd4_perturbseq"
    assert f"✓ {name}: 500 cells, 500 with age, train 500 / test 0" in result.output
    card = (in_tmp / "data/output" / name / "README.md").read_text()
    assert "license: other" in card and "| Organism(s) | Homo sapiens |" in card
    assert f"\n# {name}\n" in card and f'load_dataset("data/output/{name}")' in card and ".staging" not in card
    assert "| CELLxGENE schema version | 7.1.0 |" in card
    assert "- Matrix: `X` (csr, float32), which held integer values (counts)." in card
    import datasets

    loaded = datasets.load_dataset(str(in_tmp / "data/output" / name), cache_dir=str(in_tmp / "hf-cache"))
    assert {split: part.num_rows for split, part in loaded.items()} == {"train": 500}
    assert set(loaded["train"]["age"]) == {23.0} and set(loaded["train"]["age_max"]) == {24.0}

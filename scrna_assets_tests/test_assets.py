"""The five assets end to end through real Dagster runs (in-process executor, SQLite instance)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import polars as pl
import pytest
import scipy.sparse as sp

from scrna_assets.resources import PipelineSettings
from scrna_assets.runner import PipelineRunner, StepResult
from scrna_assets_tests.inprocess import run_dataset_here

EXAMPLE = "example_cellxgene"
OUTPUT_COLUMNS = [
    "cell_id", "dataset", "donor_id", "development_stage_ontology_term_id", "development_stage",
    "tissue", "sex", "total_counts", "is_primary_data", "organism", "cell_sentence", "n_genes", "age", "age_min", "age_max",
]


class Silent:
    """A reporter that records the notes and prints nothing."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def file(self, index: int, total: int, dataset: str) -> None: ...

    def step(self, step: int, result: StepResult | None) -> None: ...

    def note(self, line: str) -> None:
        self.notes.append(line)


def run(settings: PipelineSettings, instance, dataset: str, path: Path) -> list[StepResult]:
    runner = PipelineRunner(settings, instance)
    results = [runner.run_step(1)]
    return results + run_dataset_here(settings, instance, dataset, path, Silent())[0]


def blake2b_64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def splitmix64(x: int) -> int:
    mask = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.parquet"))
    }


def test_example_end_to_end(example_files, make_settings, instance) -> None:
    """Pins every figure of the example run and the output contract."""
    h5ad, hgnc = example_files
    settings = make_settings(hgnc_file=str(hgnc), chunk_size=1000)
    results = run(settings, instance, EXAMPLE, h5ad)
    assert [r.success for r in results] == [True] * 5
    figures = {r.asset: r.figures for r in results}
    assert figures["hgnc_mapper"]["rows"] == 1160
    convert = figures["parquet_chunks"]
    assert (convert["cells"], convert["chunks"], convert["empty_sentences"]) == (3000, 3, 48)
    assert (convert["genes_mapped_hgnc"], convert["genes_fallback"], convert["genes_dropped"]) == (1160, 39, 9)
    assert (figures["aged_chunks"]["cells_with_age"], figures["aged_chunks"]["cells_without_age"]) == (2744, 256)
    split = figures["train_test_splits"]
    assert (split["split_by"], split["train_cells"], split["test_cells"]) == ("donor", 2599, 145)
    assert (split["train_donors"], split["test_donors"]) == (34, 2)
    assert figures["hf_upload"]["status"] == "skipped"

    out = Path(settings.output_dir) / EXAMPLE
    train = pl.read_parquet(out / "train/chunks")
    test = pl.read_parquet(out / "test/chunks")
    assert [p.name for p in sorted((out / "train/chunks").iterdir())] == ["chunk_0000.parquet", "chunk_0001.parquet", "chunk_0002.parquet"]
    assert train.columns == OUTPUT_COLUMNS
    assert (train.height, test.height) == (2599, 145)
    assert set(train["donor_id"]).isdisjoint(set(test["donor_id"]))
    assert train["age"].null_count() == 0 and test["age"].null_count() == 0
    assert train.schema["n_genes"] == pl.Int32 and train.schema["age"] == pl.Float64
    assert (train["dataset"] == EXAMPLE).all()
    # interim removed after the split (no --keep-interim), logs written
    interim = Path(settings.interim_dir)
    assert not (interim / "parquet_chunks" / EXAMPLE).exists() and not (interim / "aged_chunks" / EXAMPLE).exists()
    log_lines = (Path(settings.log_dir) / EXAMPLE / "pipeline.json").read_text().splitlines()
    assert len(log_lines) == 9  # start+end of four steps, one cleanup


def test_sentences_in_output_match_a_per_cell_computation(example_files, make_settings, instance) -> None:
    """The published sentence of sampled cells equals a straightforward recomputation."""
    h5ad, hgnc = example_files
    settings = make_settings(hgnc_file=str(hgnc), top_genes=25)
    assert all(r.success for r in run(settings, instance, EXAMPLE, h5ad))
    cells = pl.read_parquet(Path(settings.output_dir) / EXAMPLE / "train/chunks")
    adata = anndata.read_h5ad(h5ad)
    symbols = dict(pd.read_csv(hgnc, sep="\t")[["ensembl_gene_id", "symbol"]].itertuples(index=False))
    tokens: list[str | None] = []
    for ensembl, name in zip(adata.var_names, adata.var["feature_name"]):
        token = symbols.get(ensembl) or (name if " " not in name else None)
        tokens.append(None if token in tokens else token)
    position = {cell: i for i, cell in enumerate(adata.obs_names)}
    for row in cells.sample(40, seed=1).iter_rows(named=True):
        values = adata.X[position[row["cell_id"]]].toarray().ravel()
        # ties by the README's tie key: splitmix64(blake2b-64(seed, dataset, cell id) XOR blake2b-64(symbol))
        cell_key = blake2b_64(f"42\x1f{EXAMPLE}\x1f{row['cell_id']}")
        ties = [splitmix64(cell_key ^ blake2b_64(t)) if t else 0 for t in tokens]
        genes = [j for j in sorted(range(len(values)), key=lambda j: (-values[j], ties[j])) if values[j] > 0 and tokens[j]]
        expected = [tokens[j] for j in genes][:25]
        assert row["cell_sentence"] == " ".join(expected)
        assert row["n_genes"] == len(expected)


def test_same_inputs_give_byte_identical_outputs(example_files, make_settings, instance, tmp_path: Path) -> None:
    h5ad, hgnc = example_files
    first = make_settings(hgnc_file=str(hgnc), output_dir=str(tmp_path / "out1"))
    second = make_settings(hgnc_file=str(hgnc), output_dir=str(tmp_path / "out2"))
    assert all(r.success for r in run(first, instance, EXAMPLE, h5ad))
    assert all(r.success for r in run(second, instance, EXAMPLE, h5ad))
    a, b = digest(tmp_path / "out1" / EXAMPLE), digest(tmp_path / "out2" / EXAMPLE)
    assert a == b and len(a) == 2


def test_rerun_leaves_no_stale_chunks_and_keep_interim(example_files, make_settings, instance) -> None:
    """A smaller second run must not leave chunk files of the first one behind."""
    h5ad, hgnc = example_files
    assert all(r.success for r in run(make_settings(hgnc_file=str(hgnc), chunk_size=500), instance, EXAMPLE, h5ad))
    settings = make_settings(hgnc_file=str(hgnc), chunk_size=5000, keep_interim=True)
    assert all(r.success for r in run(settings, instance, EXAMPLE, h5ad))
    out = Path(settings.output_dir) / EXAMPLE
    assert [p.name for p in (out / "train/chunks").iterdir()] == ["chunk_0000.parquet"]
    interim = Path(settings.interim_dir)
    assert [p.name for p in (interim / "parquet_chunks" / EXAMPLE / "chunks").iterdir()] == ["chunk_0000.parquet"]
    assert (interim / "aged_chunks" / EXAMPLE / "chunks" / "chunk_0000.parquet").exists()


def test_skip_train_test_split_writes_one_chunks_folder(example_files, make_settings, instance) -> None:
    h5ad, hgnc = example_files
    settings = make_settings(hgnc_file=str(hgnc), skip_train_test_split=True)
    assert all(r.success for r in run(settings, instance, EXAMPLE, h5ad))
    out = Path(settings.output_dir) / EXAMPLE
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["chunks"]
    assert pl.read_parquet(out / "chunks").height == 2744


def test_bad_input_fails_with_one_clear_message_and_no_output(shared_data: Path, make_settings, instance) -> None:
    path = shared_data / "h5ad" / "tiledbsoma_pbmc3k_processed_no_X.h5ad"
    settings = make_settings()
    results = run(settings, instance, "no_x", path)
    assert [r.success for r in results] == [True, False]
    assert results[-1].message == f"{path}: has no count matrix (no raw.X, no layers['counts'], no X)"
    assert not (Path(settings.output_dir) / "no_x").exists()
    assert list((Path(settings.interim_dir) / "parquet_chunks").iterdir()) == []
    assert "failed" in (Path(settings.log_dir) / "no_x" / "pipeline.log").read_text()


def test_step_without_upstream_fails_clearly(make_settings, instance) -> None:
    settings = make_settings()
    runner = PipelineRunner(settings, instance)
    runner.register("never_converted")
    result = runner.run_step(3, "never_converted")
    assert not result.success
    assert result.message.startswith("parquet_chunks for dataset 'never_converted' has not been materialized")


def test_split_refuses_ages_of_an_earlier_conversion(example_files, make_settings, instance, tmp_path: Path) -> None:
    """Step 2 run again on a changed file without step 3: the split stops instead of giving the
    new sentences the old ages, and publishes nothing."""
    import os
    import shutil

    h5ad = tmp_path / "example_cellxgene.h5ad"
    shutil.copy(example_files[0], h5ad)
    runner = PipelineRunner(make_settings(hgnc_file=str(example_files[1])), instance)
    runner.register(EXAMPLE)
    assert runner.run_step(1).success
    assert [runner.run_step(step, EXAMPLE, h5ad).success for step in (2, 3)] == [True, True]
    os.utime(h5ad, ns=(h5ad.stat().st_atime_ns, h5ad.stat().st_mtime_ns + 10**9))  # the file was replaced
    assert runner.run_step(2, EXAMPLE, h5ad).success
    result = runner.run_step(4, EXAMPLE, h5ad)
    aged = Path(runner.settings.interim_dir) / "aged_chunks" / EXAMPLE
    assert (result.success, result.message) == (
        False, f"{EXAMPLE}: the ages in {aged} were made from an earlier conversion: materialize aged_chunks again",
    )
    assert not (Path(runner.settings.output_dir) / EXAMPLE).exists()
    assert runner.run_step(3, EXAMPLE, h5ad).success and runner.run_step(4, EXAMPLE, h5ad).success


@pytest.mark.parametrize(
    ("fixture", "cells", "matrix", "with_age", "split_by", "organism"),
    [
        ("cxg_schema7.1_small_perturbations_marson_cd4_perturbseq.h5ad", 500, "X", 500, "donor", "Homo sapiens"),
        ("cxg_schema7_example_valid_unlabeled_heart320.h5ad", 320, "raw.X", 0, "donor", "Homo sapiens"),
        ("cxg_schema7_example_valid_unlabeled_tiny2x7.h5ad", 2, "raw.X", 0, "donor", "Homo sapiens"),
        ("tiledbsoma_10x_multiome_subset_100x100_counts.h5ad", 100, "X", 0, "cell", None),
        ("tiledbsoma_pbmc_small_dense_with_raw.h5ad", 80, "raw.X", 0, "cell", None),
    ],
)
def test_shared_fixtures_end_to_end(shared_data: Path, make_settings, instance, fixture, cells, matrix, with_age, split_by, organism) -> None:
    """Real files: the default split is by donor wherever a donor column exists (the 7.1 file's one
    donor: every cell in train, no blocking check fails), and every cell gets its organism."""
    settings = make_settings(hgnc_file=str(shared_data / "hgnc" / "hgnc_complete_set.parquet"), chunk_size=64, keep_interim=True)
    name = Path(fixture).stem
    results = run(settings, instance, name, shared_data / "h5ad" / fixture)
    assert all(r.success for r in results), [r.message for r in results]
    figures = {r.asset: r.figures for r in results}
    assert (figures["parquet_chunks"]["cells"], figures["parquet_chunks"]["matrix_used"]) == (cells, matrix)
    assert figures["aged_chunks"]["cells_with_age"] == with_age
    split = figures["train_test_splits"]
    assert split["split_by"] == split_by
    assert (split["train_cells"], split["test_cells"], split["donors_in_both"]) == (with_age, 0, 0)
    assert "ERROR" not in results[3].checks.values()
    assert set(pl.read_parquet(Path(settings.interim_dir) / "parquet_chunks" / name / "chunks")["organism"]) == {organism}


@pytest.mark.parametrize("fixture", ["tiledbsoma_pbmc_small_x_csc.h5ad", "tiledbsoma_pbmc_small_categorical_all_nan.h5ad"])
def test_scaled_fixtures_are_refused(shared_data: Path, make_settings, instance, fixture: str) -> None:
    path = shared_data / "h5ad" / fixture
    results = run(make_settings(), instance, Path(fixture).stem, path)
    assert results[-1].message == f"{path}: matrix X has negative values in rows 0-79: counts must be >= 0"


def test_csc_and_dense_inputs_give_the_same_output_as_csr(tmp_path: Path, make_settings, instance) -> None:
    rng = np.random.default_rng(3)
    counts = sp.random(120, 40, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    counts.data = np.ceil(counts.data * 5)
    obs = pd.DataFrame(
        {"donor_id": pd.Categorical([f"d{i % 30}" for i in range(120)]),
         "development_stage": pd.Categorical([f"{30 + i % 30}-year-old stage" for i in range(120)])},
        index=[f"c{i}" for i in range(120)],
    )
    var = pd.DataFrame({"feature_name": [f"G{j}" for j in range(40)]}, index=[f"ENSG{j:011d}" for j in range(40)])
    digests = {}
    for kind, matrix in (("csr", counts), ("csc", counts.tocsc()), ("dense", counts.toarray())):
        path = tmp_path / f"{kind}.h5ad"
        anndata.AnnData(X=matrix, obs=obs, var=var).write_h5ad(path)
        settings = make_settings(output_dir=str(tmp_path / f"out_{kind}"), chunk_size=7)
        assert all(r.success for r in run(settings, instance, "same", path))
        digests[kind] = digest(tmp_path / f"out_{kind}" / "same")
    assert digests["csr"] == digests["csc"] == digests["dense"]


def test_materialization_metadata(example_files, make_settings, instance) -> None:
    """What the UI shows for each materialization: figures, folder facts, Dagster's row count and column
    schema, histogram and age chart, code version, input hash."""
    from dagster import AssetKey

    h5ad, hgnc = example_files
    settings = make_settings(hgnc_file=str(hgnc), keep_interim=True)
    assert all(r.success for r in run(settings, instance, EXAMPLE, h5ad))

    def metadata(asset: str) -> dict:
        event = instance.get_latest_materialization_event(AssetKey(asset))
        return {k: getattr(v, "value", getattr(v, "text", v)) for k, v in event.asset_materialization.metadata.items()}

    converted = metadata("parquet_chunks")
    assert (converted["rows"], converted["chunk_files"], converted["genes_mapped_hgnc"]) == (3000, 1, 1160)
    assert converted["bytes"] == (Path(settings.interim_dir) / "parquet_chunks" / EXAMPLE / "chunks/chunk_0000.parquet").stat().st_size
    assert len(converted["input_quick_hash"]) == 64
    aged = metadata("aged_chunks")
    assert (aged["cells_with_age"], aged["cells_without_age"]) == (2744, 256)
    assert aged["age_histogram"].splitlines()[:2] == ["| age (years) | cells |", "|---|---|"]
    assert sum(int(line.split("|")[2]) for line in aged["age_histogram"].splitlines()[2:]) == 2744
    split = metadata("train_test_splits")
    assert (split["rows"], split["train_cells"], split["test_cells"], split["test_share"]) == (2744, 2599, 145, 0.052843)
    assert (split["train_donors"], split["test_donors"]) == (34, 2)

    # Dagster's standard table metadata: the UI's row count and Columns tab
    def columns(values: dict) -> list[tuple[str, str]]:
        return [(c.name, c.type) for c in values["dagster/column_schema"].columns]

    assert [metadata(a)["dagster/row_count"] for a in ("hgnc_mapper", "parquet_chunks", "aged_chunks", "train_test_splits")] == [
        1160, 3000, 3000, 2744,  # the split: train 2599 + test 145
    ]
    assert columns(metadata("hgnc_mapper")) == [("ensembl_gene_id", "large_string"), ("symbol", "large_string")]
    assert [name for name, _ in columns(split)] == OUTPUT_COLUMNS
    assert [name for name, _ in columns(converted)] == OUTPUT_COLUMNS[:-3]  # the ages come with aged_chunks
    assert columns(aged) == [("cell_id", "string"), ("age", "double"), ("age_min", "double"), ("age_max", "double")]
    types = dict(columns(split))
    assert [types[c] for c in ("cell_id", "total_counts", "is_primary_data", "n_genes", "age")] == ["string", "float", "bool", "int32", "double"]
    assert dict(columns(converted)) == {k: v for k, v in types.items() if k in OUTPUT_COLUMNS[:-3]}

    # the age chart: one bar per distinct age (26 here), counts summing to the cells with an age
    chart = aged["age_chart"].splitlines()
    assert chart[:7] == [
        "Cells per age (years): 2744 cells, 26 distinct ages",
        "",
        "```",
        "age │ cells",
        " 18 │████████████████████▋                    85",
        " 19 │████████████████████████████████████▋    151",
        " 20 │███████████████████████████████████████▊ 164",
    ]
    assert chart[-2:] == [" 87 │███████████████████▋                     81", "```"]
    bars = chart[4:-1]
    assert len(bars) == aged["distinct_ages"] == 26 and sum(int(line.split()[-1]) for line in bars) == 2744

    # each materialization records the code version it was made with (the UI's staleness panel)
    from scrna_assets.asset_metadata import CODE_VERSIONS

    for asset, version in CODE_VERSIONS.items():
        event = instance.get_latest_materialization_event(AssetKey(asset))
        assert event.asset_materialization.tags["dagster/code_version"] == version


def test_no_cell_with_an_age_succeeds_says_so_and_uploads_nothing(tmp_path: Path, make_settings, instance) -> None:
    """Every stage is `unknown`: the dataset succeeds with "no cell has an age: nothing to train on",
    its checks only warn, and hf_upload skips it even with a repository configured (no empty repo)."""
    from scrna_assets.worker import outcome as dataset_outcome

    counts = sp.csr_matrix(np.array([[1, 2, 0], [0, 3, 3]], dtype=np.float32))
    obs = pd.DataFrame({"donor_id": pd.Categorical(["a", "b"]), "development_stage": pd.Categorical(["unknown", "unknown"])}, index=["c0", "c1"])
    var = pd.DataFrame({"feature_name": ["G0", "G1", "G2"]}, index=["ENSG00000000000", "ENSG00000000001", "ENSG00000000002"])
    path = tmp_path / "ageless.h5ad"
    anndata.AnnData(X=counts, obs=obs, var=var).write_h5ad(path)
    results = run(make_settings(repo_id="someone/ageless"), instance, "ageless", path)
    assert [r.success for r in results] == [True] * 5
    assert results[3].checks == {
        "chunk_files_readable": "PASSED", "empty_sentence_share": "PASSED", "no_donor_in_both_splits": "PASSED",
        "share_of_cells_with_age": "WARN", "test_share_within_contract": "WARN",
    }
    assert (results[4].figures["status"], results[4].figures["reason"]) == ("skipped", "no cell has an age: nothing to train on")
    outcome = dataset_outcome("ageless", path, results[1:])
    assert (outcome.status, outcome.message) == (
        "SUCCESS", "no cell has an age: nothing to train on; check warnings: share_of_cells_with_age, test_share_within_contract",
    )

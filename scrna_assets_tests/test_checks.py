"""Asset checks on real published outputs: they pass on good data and fail on broken data."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scrna_assets import checks
from scrna_assets.runner import StepResult
from scrna_assets.worker import outcome as dataset_outcome
from scrna_assets_tests.test_assets import EXAMPLE, run


def run_checks(settings, folder: Path) -> dict[str, bool]:
    """Every check, evaluated directly on a (possibly tampered) published folder."""
    return {name: result.passed for name, result in checks.evaluate(folder, settings).items()}


@pytest.fixture
def published(example_files, make_settings, instance):
    h5ad, hgnc = example_files
    settings = make_settings(hgnc_file=str(hgnc))
    results = run(settings, instance, EXAMPLE, h5ad)
    assert all(r.success for r in results)
    return settings, results


def test_all_checks_pass_on_the_example(published) -> None:
    """In the real run the five checks ran after train_test_splits, and all passed."""
    settings, results = published
    names = ["chunk_files_readable", "empty_sentence_share", "no_donor_in_both_splits", "share_of_cells_with_age", "test_share_within_contract"]
    assert [sorted(r.checks) for r in results] == [[], [], [], names, []]
    assert set(results[3].checks.values()) == {"PASSED"}
    assert run_checks(settings, Path(settings.output_dir) / EXAMPLE) == dict.fromkeys(
names, True)


def test_checks_fail_on_broken_outputs(published) -> None:
    settings, _ = published
    out = Path(settings.output_dir) / EXAMPLE
    train = pq.read_table(out / "train/chunks/chunk_0000.parquet")
    leaked = train.slice(0, 400)  # train donors' cells copied into test
    pq.write_table(leaked, out / "test/chunks/chunk_0001.parquet")
    pq.write_table(pa.table({"cell_id": ["x"]}), out / "test/chunks/chunk_0002.parquet")
    outcome = run_checks(settings, out)
    assert outcome == {
        "chunk_files_readable": False,
        "empty_sentence_share": True,
        "no_donor_in_both_splits": False,
        "share_of_cells_with_age": True,
        "test_share_within_contract": False,
    }


def test_warning_thresholds(published, make_settings) -> None:
    settings, _ = published
    strict = make_settings(max_empty_share=0.01, min_age_share=0.95)  # the example: 1.5 % empty, 91.5 % with age
    outcome = run_checks(strict, Path(settings.output_dir) / EXAMPLE)
    assert (outcome["empty_sentence_share"], outcome["share_of_cells_with_age"]) == (False, False)


def test_failed_checks_reach_the_summary() -> None:
    ok = StepResult(4, "train_test_splits", True, figures={"train_cells": 5}, checks={"empty_sentence_share": "WARN", "no_donor_in_both_splits": "PASSED"})
    warned = dataset_outcome("d", Path("/in/d.h5ad"), [ok])
    assert (warned.status, warned.message) == ("SUCCESS", "check warnings: empty_sentence_share")
    bad = StepResult(4, "train_test_splits", True, checks={"no_donor_in_both_splits": "ERROR", "empty_sentence_share": "WARN"})
    failed = dataset_outcome("d", Path("/in/d.h5ad"), [bad])
    assert (failed.status, failed.message) == (
        "FAILED", "failed checks: no_donor_in_both_splits; check warnings: empty_sentence_share",
    )


def test_cell_mode_makes_the_donor_check_a_warning(example_files, make_settings, instance) -> None:
    """--split-by cell on the example (39 donors): donors land on both sides, which the check
    reports as a WARN with the reason; the dataset succeeds and its summary says why."""
    h5ad, hgnc = example_files
    settings = make_settings(hgnc_file=str(hgnc), split_by="cell")
    results = run(settings, instance, EXAMPLE, h5ad)
    assert [r.success for r in results] == [True] * 5
    split = results[3]
    assert split.checks == {
        "chunk_files_readable": "PASSED", "empty_sentence_share": "PASSED", "no_donor_in_both_splits": "WARN",
        "share_of_cells_with_age": "PASSED", "test_share_within_contract": "PASSED",
    }
    note = "split by cell: cells of one donor may be in both splits (--split-by cell asked)"
    assert split.figures["split_note"] == note
    outcome = dataset_outcome(EXAMPLE, h5ad, results)
    assert (outcome.status, outcome.message) == ("SUCCESS", f"{note}; check warnings: no_donor_in_both_splits")
    check = checks.evaluate(Path(settings.output_dir) / EXAMPLE, settings)["no_donor_in_both_splits"]
    assert (check.passed, check.severity.value, check.metadata["note"].value) == (False, "WARN", note)


def test_default_split_never_fails_its_own_checks_on_few_donors(tmp_path: Path, make_settings, instance) -> None:
    """The old auto rule split 18 donors at 0.05 by cell and then failed no_donor_in_both_splits.
    Now: by donor, every blocking check passes."""
    import anndata
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    n = 360
    counts = sp.random(n, 30, density=0.3, format="csr", random_state=np.random.default_rng(5), dtype=np.float32)
    counts.data = np.ceil(counts.data * 4)
    obs = pd.DataFrame({
        "donor_id": pd.Categorical([f"d{i % 18:02d}" for i in range(n)]),
        "development_stage": pd.Categorical([f"{20 + 3 * (i % 18)}-year-old stage" for i in range(n)]),
    }, index=[f"c{i}" for i in range(n)])
    var = pd.DataFrame({"feature_name": [f"G{j}" for j in range(30)]}, index=[f"ENSG{j:011d}" for j in range(30)])
    path = tmp_path / "eighteen.h5ad"
    anndata.AnnData(X=counts, obs=obs, var=var).write_h5ad(path)
    results = run(make_settings(), instance, "eighteen", path)
    assert [r.success for r in results] == [True] * 5
    assert (results[3].figures["split_by"], results[3].figures["donors_in_both"], results[3].figures["test_donors"]) == ("donor", 0, 1)
    assert set(results[3].checks.values()) == {"PASSED"}
    assert dataset_outcome("eighteen", path, results).status == "SUCCESS"


def test_cell_split_with_age_ranges_meets_its_contract_by_bounds(example_files, make_settings, instance) -> None:
    """--include-age-ranges with a cell split: strata are (age_min, age_max), and the exact-count
    check judges the same strata (it would fail if it still counted by point age)."""
    h5ad, hgnc = example_files
    settings = make_settings(hgnc_file=str(hgnc), split_by="cell", include_age_ranges=True)
    results = run(settings, instance, EXAMPLE, h5ad)
    split = results[3]
    assert split.checks["test_share_within_contract"] == "PASSED"
    assert split.figures["cells_kept_by_age_bounds"] == split.figures["train_cells"] + split.figures["test_cells"] - results[2].figures["cells_with_age"]
    published = Path(settings.output_dir) / EXAMPLE
    check = checks.evaluate(published, settings)["test_share_within_contract"]
    assert check.passed and check.metadata["expected_test_cells"].value == split.figures["test_cells"]

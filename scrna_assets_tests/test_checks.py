"""Asset checks on real published outputs: they pass on good data and fail on broken data."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import build_asset_check_context

from scrna_assets import checks
from scrna_assets.checks import ALL_CHECKS
from scrna_assets.runner import StepResult, _outcome
from scrna_assets_tests.test_assets import EXAMPLE, run


def run_checks(settings, folder: Path) -> dict[str, bool]:
    """Every check, invoked directly on a (possibly tampered) published folder."""
    context = build_asset_check_context()
    results = {}
    for check in ALL_CHECKS:
        arguments = [context, folder] + ([settings] if check is checks.chunk_files_readable else [])
        results[next(iter(check.check_specs)).name] = check(*arguments).passed
    return results


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


def test_warning_thresholds(published, monkeypatch) -> None:
    settings, _ = published
    monkeypatch.setattr(checks, "MAX_EMPTY_SHARE", 0.01)  # the example has 42 / 2744 = 1.5 % empty
    monkeypatch.setattr(checks, "MIN_AGE_SHARE", 0.95)  # and 2744 / 3000 = 91.5 % with age
    outcome = run_checks(settings, Path(settings.output_dir) / EXAMPLE)
    assert (outcome["empty_sentence_share"], outcome["share_of_cells_with_age"]) == (False, False)


def test_failed_checks_reach_the_summary() -> None:
    ok = StepResult(4, "train_test_splits", True, figures={"train_cells": 5}, checks={"empty_sentence_share": "WARN", "no_donor_in_both_splits": "PASSED"})
    warned = _outcome("d", Path("/in/d.h5ad"), [ok], 1.0)
    assert (warned.status, warned.message) == ("SUCCESS", "check warnings: empty_sentence_share")
    bad = StepResult(4, "train_test_splits", True, checks={"no_donor_in_both_splits": "ERROR", "empty_sentence_share": "WARN"})
    failed = _outcome("d", Path("/in/d.h5ad"), [bad], 1.0)
    assert (failed.status, failed.message) == (
        "FAILED", "failed checks: no_donor_in_both_splits; check warnings: empty_sentence_share",
    )

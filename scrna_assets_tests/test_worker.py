"""A dataset's process function, run in the test process: the up-to-date test it shares with the
sensor, and one clear line for an input that is gone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import scrna_assets.checks as checks
from scrna_assets.runner import PipelineRunner
from scrna_assets.worker import DATASET_STEPS
from scrna_assets_tests.inprocess import run_dataset_here


class Notes:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def step(self, step: int, result) -> None: ...

    def note(self, line: str) -> None:
        self.lines.append(line)


@pytest.fixture
def ready(example_files, make_settings, instance, tmp_path: Path):
    """Settings with step 1 done, the example file in its own place, and the mapping's digest."""
    from scrna_assets.provenance import mapping_digest
    import polars as pl

    h5ad, hgnc = example_files
    settings = make_settings(hgnc_file=str(hgnc))
    assert PipelineRunner(settings, instance).run_step(1).success
    source = tmp_path / "example_cellxgene.h5ad"
    shutil.copy(h5ad, source)
    digest = mapping_digest(pl.read_parquet(Path(settings.interim_dir) / "hgnc_mapper/hgnc_mapping.parquet"))
    return settings, source, digest


def test_skip_existing_reruns_an_output_whose_blocking_check_failed(ready, instance, monkeypatch) -> None:
    settings, source, digest = ready
    real = checks.split_facts

    def leaking(folder, max_rows=None):  # a donor in both splits, as the checks see it
        facts = real(folder, max_rows)
        facts.donors["test"].add(sorted(facts.donors["train"])[0])
        return facts

    monkeypatch.setattr(checks, "split_facts", leaking)
    _, failed = run_dataset_here(settings, instance, "example_cellxgene", source, Notes(), skip_existing=True, hgnc_digest=digest)
    assert (failed.status, failed.message) == ("FAILED", "failed checks: no_donor_in_both_splits")
    recorded = json.loads((Path(settings.output_dir) / "example_cellxgene/checks.json").read_text())
    assert recorded["no_donor_in_both_splits"] == {"passed": False, "severity": "ERROR"}
    monkeypatch.setattr(checks, "split_facts", real)

    notes = Notes()
    results, rerun = run_dataset_here(settings, instance, "example_cellxgene", source, notes, skip_existing=True, hgnc_digest=digest)
    assert (rerun.status, [r.step for r in results]) == ("SUCCESS", list(DATASET_STEPS))  # not skipped: processed again
    _, skipped = run_dataset_here(settings, instance, "example_cellxgene", source, notes, skip_existing=True, hgnc_digest=digest)
    assert (skipped.status, skipped.message) == ("SKIPPED", "outputs up to date (same input file and parameters)")
    assert notes.lines[-1] == "SKIPPED example_cellxgene: outputs are up to date"


@pytest.mark.parametrize("gone", ["dangling symlink", "vanished"])
def test_an_input_that_is_gone_is_one_failure_line(ready, instance, tmp_path: Path, gone: str) -> None:
    settings, source, digest = ready
    path = tmp_path / "gone.h5ad"
    if gone == "dangling symlink":
        path.symlink_to(tmp_path / "elsewhere.h5ad")
        problem = f"is a symbolic link to {tmp_path / 'elsewhere.h5ad'}, which does not exist"
    else:
        problem = "does not exist (moved or deleted after it was listed)"
    _, outcome = run_dataset_here(settings, instance, "gone", path, Notes(), skip_existing=True, hgnc_digest=digest)
    assert (outcome.status, outcome.message) == ("FAILED", f"step 2 (parquet_chunks): {path}: {problem}")
    assert not (Path(settings.interim_dir) / "parquet_chunks/gone").exists()

"""Partitioned asset checks on the published train/test data: each reads only its partition."""

import warnings
from pathlib import Path

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, PreviewWarning, asset_check

from scrna_assets.assets import train_test_splits
from scrna_assets.core.quality import split_facts
from scrna_assets.core.split import NOTHING_TO_TRAIN_ON
from scrna_assets.partitions import datasets_partitions
from scrna_assets.provenance import read_provenance, record_check
from scrna_assets.resources import PipelineSettings
from scrna_assets.settings import Settings

# Partitioned checks are a preview feature of Dagster 1.13; they are what lets a check read only its
# own partition, so we use them and keep the notice out of every command's output.
warnings.filterwarnings("ignore", category=PreviewWarning, message=".*partitions_def on an AssetCheckSpec.*")

MIN_AGE_SHARE = Settings.model_fields["min_age_share"].default
MAX_EMPTY_SHARE = Settings.model_fields["max_empty_share"].default


def _recorded(folder: Path, check: str, result: AssetCheckResult) -> AssetCheckResult:
    """Write the outcome into the output's ``checks.json``: what ``--skip-existing`` and the sensor
    read to tell a good output from one whose blocking check failed."""
    record_check(folder, check, result.passed, result.severity.value)
    return result


def _provenance(folder: Path) -> tuple[dict, dict]:
    record = read_provenance(folder) or {}
    return record.get("parameters", {}), record.get("figures", {})


@asset_check(asset=train_test_splits, partitions_def=datasets_partitions, blocking=True,
             description="No donor has cells in both train and test: ERROR in donor mode; WARN in cell mode, which cannot promise it.")
def no_donor_in_both_splits(context: AssetCheckExecutionContext, train_test_splits: Path) -> AssetCheckResult:
    _, figures = _provenance(train_test_splits)
    facts = split_facts(train_test_splits)
    shared = sorted(facts.donors.get("train", set()) & facts.donors.get("test", set()))
    cell_mode = figures.get("split_by") == "cell"
    metadata = {"donors_in_both": len(shared), "examples": ", ".join(shared[:10]),
                "train_donors": len(facts.donors.get("train", ())), "test_donors": len(facts.donors.get("test", ()))}
    if cell_mode:
        metadata["note"] = figures.get("split_note", "")
    return _recorded(train_test_splits, "no_donor_in_both_splits", AssetCheckResult(
        passed=not shared, severity=AssetCheckSeverity.WARN if cell_mode else AssetCheckSeverity.ERROR, metadata=metadata,
    ))


@asset_check(asset=train_test_splits, partitions_def=datasets_partitions, blocking=True,
             description="Test share as the contract says: exact per-age counts (cell) or within the largest donor's share (donor).")
def test_share_within_contract(context: AssetCheckExecutionContext, train_test_splits: Path) -> AssetCheckResult:
    parameters, figures = _provenance(train_test_splits)
    facts = split_facts(train_test_splits)
    mode, test_size = figures.get("split_by", "none"), parameters.get("test_size")
    metadata = {"split_by": mode, "test_share": round(facts.test_share, 6), "test_size": test_size or 0.0}
    if facts.total == 0:  # nothing to split: a warning about the data, not a broken split
        result = AssetCheckResult(passed=False, severity=AssetCheckSeverity.WARN, metadata={**metadata, "note": NOTHING_TO_TRAIN_ON})
    elif mode == "cell":
        expected = facts.expected_cell_mode_test_cells(test_size, by_bounds=bool(parameters.get("include_age_ranges")))
        result = AssetCheckResult(passed=facts.cells.get("test", 0) == expected, metadata={**metadata, "expected_test_cells": expected})
    elif mode == "donor":
        bound = facts.largest_donor_share
        result = AssetCheckResult(passed=abs(facts.test_share - test_size) <= bound + 1e-12, metadata={**metadata, "bound": round(bound, 6)})
    else:
        result = AssetCheckResult(passed=facts.cells.get("test", 0) == 0, metadata={**metadata, "note": "no split requested"})
    return _recorded(train_test_splits, "test_share_within_contract", result)


@asset_check(asset=train_test_splits, partitions_def=datasets_partitions,
             description=f"At least SCRNA_MIN_AGE_SHARE (default {MIN_AGE_SHARE:g}) of the cells read have an age.")
def share_of_cells_with_age(context: AssetCheckExecutionContext, train_test_splits: Path, settings: PipelineSettings) -> AssetCheckResult:
    _, figures = _provenance(train_test_splits)
    cells, aged = figures.get("cells", 0), figures.get("cells_with_age", 0)
    share = aged / cells if cells else 0.0
    return _recorded(train_test_splits, "share_of_cells_with_age", AssetCheckResult(
        passed=share >= settings.min_age_share, severity=AssetCheckSeverity.WARN,
        metadata={"cells": cells, "cells_with_age": aged, "share": round(share, 6), "threshold": settings.min_age_share},
    ))


@asset_check(asset=train_test_splits, partitions_def=datasets_partitions,
             description=f"At most SCRNA_MAX_EMPTY_SHARE (default {MAX_EMPTY_SHARE:g}) of the cells have an empty sentence.")
def empty_sentence_share(context: AssetCheckExecutionContext, train_test_splits: Path, settings: PipelineSettings) -> AssetCheckResult:
    facts = split_facts(train_test_splits)
    share = facts.empty_sentences / facts.total if facts.total else 0.0
    return _recorded(train_test_splits, "empty_sentence_share", AssetCheckResult(
        passed=share <= settings.max_empty_share, severity=AssetCheckSeverity.WARN,
        metadata={"empty_sentences": facts.empty_sentences, "cells": facts.total, "share": round(share, 6), "threshold": settings.max_empty_share},
    ))


@asset_check(asset=train_test_splits, partitions_def=datasets_partitions, blocking=True,
             description="Every chunk file is readable parquet with the expected columns and at most --chunk-size rows.")
def chunk_files_readable(context: AssetCheckExecutionContext, train_test_splits: Path, settings: PipelineSettings) -> AssetCheckResult:
    facts = split_facts(train_test_splits, max_rows=settings.chunk_size)
    return _recorded(train_test_splits, "chunk_files_readable", AssetCheckResult(
        passed=not facts.schema_problems,
        metadata={"problems": len(facts.schema_problems), "first_problems": "; ".join(facts.schema_problems[:5]), "cells": facts.total},
    ))


ALL_CHECKS = [no_donor_in_both_splits, test_share_within_contract, share_of_cells_with_age, empty_sentence_share, chunk_files_readable]
BLOCKING_CHECKS = tuple(spec.name for check in ALL_CHECKS for spec in check.check_specs if spec.blocking)

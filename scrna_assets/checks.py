"""Partitioned asset checks on the published train/test data: each reads only its partition.

The five checks are evaluated by one op (``split_checks``) that reads the output's facts once: five
ops cost five Dagster steps' worth of run events per dataset (~0.3 s a file on SQLite) and read the
same parquet footers five times. Each check keeps its own name, severity and blocking flag in the UI.
If the output cannot be read at all, the op fails with no result recorded: the split step is then
reported failed, and ``--skip-existing`` and the sensor treat the output as not up to date.
"""

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, PreviewWarning, multi_asset_check

from scrna_assets.assets import train_test_splits
from scrna_assets.core.quality import SplitFacts, split_facts
from scrna_assets.core.split import NOTHING_TO_TRAIN_ON
from scrna_assets.partitions import datasets_partitions
from scrna_assets.provenance import read_provenance, record_checks
from scrna_assets.resources import PipelineSettings
from scrna_assets.settings import Settings

# Partitioned checks are a preview feature of Dagster 1.13; they are what lets a check read only its
# own partition, so we use them and keep the notice out of every command's output.
warnings.filterwarnings("ignore", category=PreviewWarning, message=".*partitions_def on an AssetCheckSpec.*")

MIN_AGE_SHARE = Settings.model_fields["min_age_share"].default
MAX_EMPTY_SHARE = Settings.model_fields["max_empty_share"].default


class Evidence:
    """What the checks read, read once: the output's facts and its provenance."""

    def __init__(self, folder: Path, settings: PipelineSettings) -> None:
        record = read_provenance(folder) or {}
        self.parameters: dict = record.get("parameters", {})
        self.figures: dict = record.get("figures", {})
        self.facts: SplitFacts = split_facts(folder, max_rows=settings.chunk_size)
        self.settings = settings


def no_donor_in_both_splits(evidence: Evidence) -> AssetCheckResult:
    facts, figures = evidence.facts, evidence.figures
    shared = sorted(facts.donors.get("train", set()) & facts.donors.get("test", set()))
    cell_mode = figures.get("split_by") == "cell"
    metadata = {"donors_in_both": len(shared), "examples": ", ".join(shared[:10]),
                "train_donors": len(facts.donors.get("train", ())), "test_donors": len(facts.donors.get("test", ()))}
    if cell_mode:
        metadata["note"] = figures.get("split_note", "")
    return AssetCheckResult(passed=not shared, severity=AssetCheckSeverity.WARN if cell_mode else AssetCheckSeverity.ERROR, metadata=metadata)


def test_share_within_contract(evidence: Evidence) -> AssetCheckResult:
    facts, parameters = evidence.facts, evidence.parameters
    mode, test_size = evidence.figures.get("split_by", "none"), parameters.get("test_size")
    metadata = {"split_by": mode, "test_share": round(facts.test_share, 6), "test_size": test_size or 0.0}
    if facts.total == 0:  # nothing to split: a warning about the data, not a broken split
        return AssetCheckResult(passed=False, severity=AssetCheckSeverity.WARN, metadata={**metadata, "note": NOTHING_TO_TRAIN_ON})
    if mode == "cell":
        expected = facts.expected_cell_mode_test_cells(test_size, by_bounds=bool(parameters.get("include_age_ranges")))
        return AssetCheckResult(passed=facts.cells.get("test", 0) == expected, metadata={**metadata, "expected_test_cells": expected})
    if mode == "donor":
        bound = facts.largest_donor_share
        return AssetCheckResult(passed=abs(facts.test_share - test_size) <= bound + 1e-12, metadata={**metadata, "bound": round(bound, 6)})
    return AssetCheckResult(passed=facts.cells.get("test", 0) == 0, metadata={**metadata, "note": "no split requested"})


def share_of_cells_with_age(evidence: Evidence) -> AssetCheckResult:
    cells, aged = evidence.figures.get("cells", 0), evidence.figures.get("cells_with_age", 0)
    share = aged / cells if cells else 0.0
    threshold = evidence.settings.min_age_share
    return AssetCheckResult(
        passed=share >= threshold, severity=AssetCheckSeverity.WARN,
        metadata={"cells": cells, "cells_with_age": aged, "share": round(share, 6), "threshold": threshold},
    )


def empty_sentence_share(evidence: Evidence) -> AssetCheckResult:
    facts, threshold = evidence.facts, evidence.settings.max_empty_share
    share = facts.empty_sentences / facts.total if facts.total else 0.0
    return AssetCheckResult(
        passed=share <= threshold, severity=AssetCheckSeverity.WARN,
        metadata={"empty_sentences": facts.empty_sentences, "cells": facts.total, "share": round(share, 6), "threshold": threshold},
    )


def chunk_files_readable(evidence: Evidence) -> AssetCheckResult:
    problems = evidence.facts.schema_problems
    return AssetCheckResult(
        passed=not problems,
        metadata={"problems": len(problems), "first_problems": "; ".join(problems[:5]), "cells": evidence.facts.total},
    )


Check = Callable[[Evidence], AssetCheckResult]
CHECKS: dict[str, tuple[Check, bool, str]] = {
    "no_donor_in_both_splits": (no_donor_in_both_splits, True,
        "No donor has cells in both train and test: ERROR in donor mode; WARN in cell mode, which cannot promise it."),
    "test_share_within_contract": (test_share_within_contract, True,
        "Test share as the contract says: exact per-age counts (cell) or within the largest donor's share (donor)."),
    "share_of_cells_with_age": (share_of_cells_with_age, False,
        f"At least SCRNA_MIN_AGE_SHARE (default {MIN_AGE_SHARE:g}) of the cells read have an age."),
    "empty_sentence_share": (empty_sentence_share, False,
        f"At most SCRNA_MAX_EMPTY_SHARE (default {MAX_EMPTY_SHARE:g}) of the cells have an empty sentence."),
    "chunk_files_readable": (chunk_files_readable, True,
        "Every chunk file is readable parquet with the expected columns and at most --chunk-size rows."),
}
"""Check name -> (its rule, whether a failed ERROR blocks the steps after the split, description)."""


def evaluate(folder: Path, settings: PipelineSettings) -> dict[str, AssetCheckResult]:
    """Every check's result on a published split folder, recorded in its ``checks.json`` (what
    ``--skip-existing`` and the sensor read to tell a good output from one whose blocking check failed)."""
    evidence = Evidence(folder, settings)
    results = {name: rule(evidence) for name, (rule, _, _) in CHECKS.items()}
    record_checks(folder, {name: (r.passed, r.severity.value) for name, r in results.items()})
    return results


@multi_asset_check(
    specs=[
        AssetCheckSpec(name, asset=train_test_splits, blocking=blocking, description=description, partitions_def=datasets_partitions)
        for name, (_, blocking, description) in CHECKS.items()
    ],
)
def split_checks(context: AssetCheckExecutionContext, train_test_splits: Path, settings: PipelineSettings) -> Iterator[AssetCheckResult]:
    train_test_splits_key = context.check_specs[0].asset_key
    for name, result in evaluate(train_test_splits, settings).items():
        yield AssetCheckResult(
            asset_key=train_test_splits_key, check_name=name, passed=result.passed, severity=result.severity, metadata=result.metadata
        )


ALL_CHECKS = [split_checks]
BLOCKING_CHECKS = tuple(name for name, (_, blocking, _) in CHECKS.items() if blocking)

"""The batch summary block and its machine-readable twins."""

import csv
import json
from pathlib import Path

from scrna_assets.summary import DatasetOutcome, render_summary, write_summary

ROWS = [
    DatasetOutcome("a", "/in/a.h5ad", "SUCCESS", "", 100, 90, 85, 5, 1.234),
    DatasetOutcome("b", "/in/b.h5ad", "FAILED", "step 2 (parquet_chunks): /in/b.h5ad: bad\tthing"),
    DatasetOutcome("c", "/in/c.h5ad", "SKIPPED", "outputs up to date (same input file and parameters)"),
]


def test_render_summary_exact() -> None:
    text = render_summary(ROWS, {"Input": "/in", "Logs": "/logs"})
    assert text.splitlines() == [
        "=" * 60,
        "BATCH SUMMARY",
        "=" * 60,
        "Total: 3  Succeeded: 1  Failed: 1  Skipped: 1",
        "",
        "✓ a: 100 cells, 90 with age, train 85 / test 5 (1.2 s)",
        "✗ b: step 2 (parquet_chunks): /in/b.h5ad: bad\tthing",
        "SKIPPED c: outputs up to date (same input file and parameters)",
        "",
        "Directories:",
        "  Input:    /in",
        "  Logs:     /logs",
    ]


def test_write_summary_json_and_tsv(tmp_path: Path) -> None:
    json_path, tsv_path = write_summary(ROWS, tmp_path)
    assert json.loads(json_path.read_text())[0] == {
        "dataset": "a", "input_file": "/in/a.h5ad", "status": "SUCCESS", "message": "",
        "cells_read": 100, "cells_with_age": 90, "train_cells": 85, "test_cells": 5, "seconds": 1.234,
    }
    rows = list(csv.DictReader(tsv_path.open(), delimiter="\t"))
    assert [r["status"] for r in rows] == ["SUCCESS", "FAILED", "SKIPPED"]
    assert rows[1]["message"] == "step 2 (parquet_chunks): /in/b.h5ad: bad thing"  # tabs cannot break columns
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch_summary.json", "batch_summary.tsv"]

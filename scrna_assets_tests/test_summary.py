"""The batch summary block and its machine-readable twins."""

import csv
import json
import os
import re
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from scrna_assets.summary import DatasetOutcome, render_summary, write_summary
from scrna_assets_tests.disk_full import SKIP_REASON, disk_full_supported, run_python_on_small_tmpfs

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
    assert re.fullmatch(rf"batch_summary-\d{{8}}T\d{{6}}Z-{os.getpid()}\.json", json_path.name)
    assert tsv_path.name == json_path.name.removesuffix(".json") + ".tsv"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [json_path.name, tsv_path.name, "batch_summary.json", "batch_summary.tsv"]
    )
    assert (tmp_path / "batch_summary.json").read_bytes() == json_path.read_bytes()
    assert (tmp_path / "batch_summary.tsv").read_bytes() == tsv_path.read_bytes()


def test_batches_in_the_same_second_keep_their_own_files(tmp_path: Path) -> None:
    """Same pid, same second: the second batch gets a -2 suffix; the latest copy is the second batch."""
    started = datetime(2026, 12, 2, 14, 5, 1, 999_000, tzinfo=timezone(timedelta(hours=1)))  # 13:05:01 UTC
    first = write_summary(ROWS[:1], tmp_path, started=started)
    second = write_summary(ROWS[1:], tmp_path, started=started)
    base = f"batch_summary-20261202T130501Z-{os.getpid()}"
    assert [p.name for p in first] == [f"{base}.json", f"{base}.tsv"]
    assert [p.name for p in second] == [f"{base}-2.json", f"{base}-2.tsv"]
    assert [r["dataset"] for r in json.loads(first[0].read_text())] == ["a"]
    assert [r["dataset"] for r in json.loads(second[0].read_text())] == ["b", "c"]
    assert first[1].read_text().splitlines()[1].split("\t")[0] == "a"
    assert (tmp_path / "batch_summary.json").read_bytes() == second[0].read_bytes()
    assert (tmp_path / "batch_summary.tsv").read_bytes() == second[1].read_bytes()
    assert len(list(tmp_path.iterdir())) == 6


CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from scrna_assets.summary import DatasetOutcome, write_summary

    folder = Path(sys.argv[1])
    (folder / "batch_summary.json").write_text("previous\\n")
    rows = [DatasetOutcome("a", "/in/a.h5ad", "FAILED", "x" * 200_000)]
    try:
        write_summary(rows, folder)
        report = {"raised": None}
    except OSError as error:
        report = {"raised": str(error)}
    report["files"] = sorted(p.name for p in folder.iterdir())
    report["latest"] = (folder / "batch_summary.json").read_text()
    print(json.dumps(report))
    """
)


@pytest.mark.skipif(not disk_full_supported(), reason=SKIP_REASON)
def test_full_disk_leaves_no_trace(tmp_path: Path) -> None:
    """A summary that does not fit: one message naming the folder, no placeholder or *.tmp, previous latest kept."""
    logs = tmp_path / "logs"
    logs.mkdir()
    report = run_python_on_small_tmpfs(logs, 64, CHILD)
    assert report == {
        "raised": f"no space left in {logs} (the disk or quota is full)",
        "files": ["batch_summary.json"],
        "latest": "previous\n",
    }

"""Smoke tests of the benchmark code (``python -m benchmarks``) on tiny files: it runs, measures,
checks and reports. No timing assertions: speed is judged by running the benchmark itself."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import main
from benchmarks.measure import run_measured
from benchmarks.runner import _step_times, scaling_ratios

TINY = ["--genes", "150", "--nnz", "20", "--top-genes", "10", "--chunk-size", "120", "--check-cells", "40"]


def only(folder: Path, pattern: str) -> Path:
    files = sorted(folder.glob(pattern))
    assert len(files) == 1, files
    return files[0]


def test_run_measures_conversion_run_all_and_naive(tmp_path: Path) -> None:
    """One tiny file end to end: conversion (random tie-break, and position to compare) and
    run-all children, naive reference, sample checks, JSON and Markdown results."""
    assert main(["run", "--cells", "300", "--naive-cells", "130", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), *TINY]) == 0
    report = json.loads(only(tmp_path / "out", "single-*.json").read_text())
    result = report["result"]
    assert result["input"]["cells"] == 300
    assert result["conversion"]["chunk_files"] == 3
    assert result["conversion"]["peak_rss_bytes"] > 0 and result["conversion"]["output_bytes"] > 0
    assert result["check_conversion"]["ok"] and result["check_conversion"]["checked"] >= 40
    assert result["conversion"]["tie_break"] == "random" and result["conversion_position"]["tie_break"] == "position"
    assert result["conversion_position"]["cells"] == 300 and result["check_conversion_position"]["ok"]
    cost = result["tie_break_cost"]
    assert cost["random_cells_per_second"] == result["conversion"]["cells_per_second"]
    assert cost["position_cells_per_second"] == result["conversion_position"]["cells_per_second"]
    assert cost["runs_each"] == 1 and "random_tie_break_cost_percent" in result["targets"]
    assert result["check_run_all"]["ok"]
    assert set(result["run_all"]["steps"]) == {"parquet_chunks", "aged_chunks", "train_test_splits", "hf_upload"}
    assert result["run_all"]["peak_rss_bytes"] > 0
    assert result["naive"]["cells"] == 130 and result["naive"]["same_sentences_as_fast_path"]
    assert result["targets"]["output_matches_contract"]["met"]
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu_model"]
    markdown = only(tmp_path / "out", "single-*.md").read_text()
    assert "| conversion alone | 300 |" in markdown and "whole `run-all`" in markdown and "naive reference" in markdown
    assert "| conversion, tie-break position | 300 |" in markdown and "random tie-break: " in markdown
    assert not (tmp_path / "work" / "runs").exists() or not any((tmp_path / "work" / "runs").iterdir())


def test_scaling_without_run_all(tmp_path: Path) -> None:
    assert main(["scaling", "--cells", "100", "250", "--skip-run-all", "--naive-cells", "0", "--skip-tie-break-compare",
                 "--repeat", "2", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out"), *TINY]) == 0
    report = json.loads(only(tmp_path / "out", "scaling-*.json").read_text())
    assert set(report["results"]) == {"100", "250"}
    for result in report["results"].values():
        assert "conversion_position" not in result and "tie_break_cost" not in result
        assert len(result["conversion"]["runs"]) == 2 and result["check_conversion"]["ok"]
    [ratio] = report["ratios"]
    assert ratio["cells_ratio"] == 2.5 and ratio["conversion_peak_rss_ratio"] > 0
    assert "Scaling" in only(tmp_path / "out", "scaling-*.md").read_text()


def test_profile_and_generate(tmp_path: Path) -> None:
    path = tmp_path / "g.h5ad"
    assert main(["generate", str(path), "--cells", "200", "--genes", "100", "--nnz", "10"]) == 0
    assert path.exists()
    assert main(["profile", "--input", str(path), "--chunks", "2", "--chunk-size", "80", "--top-genes", "5", "--out", str(tmp_path / "out")]) == 0
    profile = json.loads(only(tmp_path / "out", "profile-*.json").read_text())
    assert profile["before"]["cells"] == profile["after"]["cells"] == 160
    assert set(profile["after"]["stages"]) == set(profile["before"]["stages"])


def test_measure_child_peak_rss(tmp_path: Path) -> None:
    """wait4 gives the child's peak RSS; the sampled tree RSS sees a child of the child."""
    code = "import subprocess, sys, time; b = bytearray(80 * 2**20); subprocess.run([sys.executable, '-c', 'import time; time.sleep(0.5)']); print('done')"
    measurement = run_measured([sys.executable, "-c", code], interval=0.02)
    assert measurement.exit_code == 0 and measurement.stdout.strip() == "done"
    assert measurement.peak_rss_bytes >= 80 * 2**20
    assert measurement.peak_tree_rss_bytes >= 80 * 2**20
    assert measurement.timeline and measurement.wall_seconds >= 0.5


def test_step_times_and_ratios(tmp_path: Path) -> None:
    log = tmp_path / "pipeline.log"
    log.write_text(
        "2026-01-01T00:00:10.000+00:00 INFO    [ds] parquet_chunks: start\n"
        "2026-01-01T00:00:14.500+00:00 INFO    [ds] parquet_chunks: end (cells=3 seconds=4.5)\n"
        "2026-01-01T00:00:15.000+00:00 INFO    [ds] aged_chunks: start\n"
    )
    import datetime

    launched = datetime.datetime.fromisoformat("2026-01-01T00:00:00+00:00").timestamp()
    assert _step_times(log, launched) == {"parquet_chunks": {"start": 10.0, "end": 14.5}}
    base = {"conversion": {"convert_seconds": 1.0, "cells_per_second": 10, "peak_rss_bytes": 100}}
    big = {"conversion": {"convert_seconds": 9.0, "cells_per_second": 11, "peak_rss_bytes": 110}}
    [ratio] = scaling_ratios({10: base, 100: big})
    assert ratio["conversion_time_ratio"] == 9.0 and ratio["conversion_peak_rss_ratio"] == 1.1 and ratio["rss_growth_target_met"]
    with pytest.raises(KeyError):
        scaling_ratios({10: {}, 100: big})

"""Smoke tests of the benchmark code (``python -m benchmarks``) on tiny files: it runs, measures,
checks and reports. No timing assertions: speed is judged by running the benchmark itself."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks import report, runner
from benchmarks.__main__ import main
from benchmarks.measure import Measurement, run_measured
from benchmarks.runner import Settings, judge_batch, per_file_overhead, run_all_figures, scaling_ratios, step_times

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


LAUNCHED = 1_767_225_600.0  # 2026-01-01T00:00:00+00:00


def event(second: float, step: str, kind: str, **figures: object) -> str:
    """One line of a dataset's pipeline.json, ``second`` seconds after LAUNCHED."""
    stamp = f"2026-01-01T00:00:{second:06.3f}+00:00"
    return json.dumps({"time": stamp, "level": "INFO", "dataset": "ds", "step": step, "event": kind, "message": "", "figures": figures}) + "\n"


def test_step_times_and_ratios(tmp_path: Path) -> None:
    """Step times come from pipeline.json: the step's own ``seconds`` figure, else end - start
    (the skipped upload reports none); events other than start/end and unfinished steps are left out."""
    log = tmp_path / "pipeline.json"
    log.write_text(
        event(10, "parquet_chunks", "start") + event(14.5, "parquet_chunks", "end", cells=3, seconds=4.4)
        + event(14.6, "cleanup", "interim removed", removed=[]) + event(15, "hf_upload", "start")
        + event(15.25, "hf_upload", "end", status="skipped") + event(16, "aged_chunks", "start")
    )
    assert step_times(log, LAUNCHED) == {"parquet_chunks": {"start": 10.0, "end": 14.5, "seconds": 4.4},
                                         "hf_upload": {"start": 15.0, "end": 15.25, "seconds": 0.25}}
    assert step_times(tmp_path / "missing.json", LAUNCHED) == {}
    base = {"conversion": {"convert_seconds": 1.0, "cells_per_second": 10, "peak_rss_bytes": 100}}
    big = {"conversion": {"convert_seconds": 9.0, "cells_per_second": 11, "peak_rss_bytes": 110}}
    [ratio] = scaling_ratios({10: base, 100: big})
    assert ratio["conversion_time_ratio"] == 9.0 and ratio["conversion_peak_rss_ratio"] == 1.1 and ratio["rss_growth_target_met"]
    with pytest.raises(KeyError):
        scaling_ratios({10: {}, 100: big})


def test_per_file_overhead() -> None:
    """The process's seconds as the batch parent saw them minus its steps' own seconds; a dataset
    without logged steps (refused, crashed early) is all overhead."""
    summary = [{"dataset": "a", "seconds": 2.0}, {"dataset": "b", "seconds": 1.5}, {"dataset": "c", "seconds": 0.75}]
    steps = {"a": {"parquet_chunks": 1.25, "aged_chunks": 0.25, "train_test_splits": 0.1, "hf_upload": 0.0}, "b": {"parquet_chunks": 1.2}}
    assert per_file_overhead(summary, steps) == {"median_seconds": 0.4, "max_seconds": 0.75, "per_file": {"a": 0.4, "b": 0.3, "c": 0.75}}
    assert per_file_overhead([], {}) == {"median_seconds": None, "max_seconds": None, "per_file": {}}


def test_covered_seconds() -> None:
    assert runner.covered_seconds([(3, 4), (1, 2), (1.5, 2.5), (3.5, 3.75)]) == 2.5
    assert runner.covered_seconds([]) == 0


def fake_measurement(wall: float, timeline: list[tuple[float, int, int]]) -> Measurement:
    return Measurement(command=["preprocess"], exit_code=0, wall_seconds=wall, user_seconds=1.0, system_seconds=0.5, peak_rss_bytes=300,
                       peak_tree_rss_bytes=max(r for _, r, _ in timeline), stdout="", stderr="", timeline=timeline,
                       peak_tree_pss_bytes=max(p for _, _, p in timeline))


def write_batch_logs(log_dir: Path, datasets: dict[str, tuple[float, list[tuple[str, float, float, float]]]]) -> None:
    """batch_summary.json and each dataset's pipeline.json: {name: (process seconds, [(step, start, end, seconds)])}."""
    rows = []
    for name, (seconds, steps) in datasets.items():
        (log_dir / name).mkdir(parents=True)
        text = "".join(event(start, step, "start") + event(end, step, "end", seconds=own) for step, start, end, own in steps)
        (log_dir / name / "pipeline.json").write_text(text)
        rows.append({"dataset": name, "input_file": f"{name}.h5ad", "status": "SUCCESS", "message": "", "cells_read": 1000,
                     "cells_with_age": 1000, "train_cells": 950, "test_cells": 50, "seconds": seconds})
    (log_dir / "batch_summary.json").write_text(json.dumps(rows))


def test_run_all_figures_from_logs(tmp_path: Path) -> None:
    """A batch's figures from its logs and sampled timeline: step totals, the wall time no step
    ran (a and b overlap: two dataset processes at once), per-file overhead, each dataset's peaks
    over its steps, and how the peak grows from the first file to the last."""
    write_batch_logs(tmp_path, {"a": (2.0, [("parquet_chunks", 1, 2, 1.0), ("train_test_splits", 2, 2.5, 0.5)]),
                                "b": (1.75, [("parquet_chunks", 2.25, 3.5, 1.25), ("hf_upload", 3.5, 3.75, 0.25)])})
    timeline = [(0.5, 90, 60), (1.5, 400, 200), (2.2, 500, 240), (3.2, 600, 300), (4.5, 100, 70)]
    figures = run_all_figures(fake_measurement(5.0, timeline), tmp_path, LAUNCHED, 2000)
    assert figures["files"] == 2 and figures["failed_files"] == 0 and figures["cells_per_second"] == 400
    assert figures["step_seconds"] == {"parquet_chunks": 2.25, "train_test_splits": 0.5, "hf_upload": 0.25}
    assert figures["in_steps_seconds"] == 3.0 and figures["outside_steps_seconds"] == 2.25
    assert figures["overhead"] == {"median_seconds": 0.375, "max_seconds": 0.5, "per_file": {"a": 0.5, "b": 0.25}}
    a, b = figures["datasets"]["a"], figures["datasets"]["b"]
    assert (a["peak_tree_rss_bytes"], a["peak_tree_pss_bytes"], b["peak_tree_rss_bytes"], b["peak_tree_pss_bytes"]) == (500, 240, 600, 300)
    assert a["steps"]["parquet_chunks"] == {"seconds": 1.0, "peak_tree_rss_bytes": 400, "peak_tree_pss_bytes": 200}
    assert figures["memory_growth_pss"] == 1.25 and figures["memory_growth_rss"] == 1.2
    assert figures["peak_tree_rss_bytes"] == 600 and figures["peak_tree_pss_bytes"] == 300


def batch_run(wall: float, cells: int, conversion: float, overhead_max: float, pss: int, rss: int, growth: float | None) -> dict:
    run = {"exit_code": 0, "wall_seconds": wall, "cells": cells, "cells_per_second": round(cells / wall),
           "step_seconds": {"parquet_chunks": conversion}, "overhead": {"median_seconds": overhead_max / 2, "max_seconds": overhead_max},
           "peak_tree_pss_bytes": pss, "peak_tree_rss_bytes": rss, "memory_growth_pss": growth, "memory_growth_rss": growth}
    return {**run, **runner._over_conversion_step(run)}


def test_batch_ratio_and_targets() -> None:
    """The batch result judged against the issue's targets, exact values on fixed figures; the
    memory target takes PSS, or tree RSS where PSS was unavailable (0)."""
    big = batch_run(wall=8.0, cells=100_000, conversion=5.0, overhead_max=1.0, pss=1_400_000_000, rss=2_000_000_000, growth=None)
    batch = batch_run(wall=12.5, cells=100_000, conversion=5.0, overhead_max=0.5, pss=0, rss=1_600_000_000, growth=1.25)
    assert (big["cells_per_second"], big["over_conversion_step"], big["conversion_step_cells_per_second"]) == (12_500, 1.6, 20_000)
    result = {"big": big, "batch": batch, "batch_over_big_cells_per_second": round(batch["cells_per_second"] / big["cells_per_second"], 3)}
    assert result["batch_over_big_cells_per_second"] == 0.64
    targets = judge_batch(result)
    assert {name: (t["value"], t["met"]) for name, t in targets.items()} == {
        "big_run_all_succeeded": (0, True),
        "batch_run_all_succeeded": (0, True),
        "batch_over_big_cells_per_second": (0.64, False),
        "batch_overhead_per_file_max_seconds": (0.5, True),
        "big_run_all_over_conversion_step": (1.6, True),
        "big_conversion_step_cells_per_second": (20_000, True),
        "big_peak_tree_pss_bytes": (1_400_000_000, True),
        "batch_peak_tree_rss_bytes": (1_600_000_000, False),
        "batch_memory_growth_rss": (1.25, False),
    }
    assert targets["batch_over_big_cells_per_second"]["target"] == ">= 0.7"
    failed = batch_run(wall=3.0, cells=100_000, conversion=0.0, overhead_max=0.1, pss=1, rss=1, growth=1.0)
    assert failed["over_conversion_step"] is None
    assert not judge_batch({**result, "big": failed})["big_run_all_over_conversion_step"]["met"]


def test_batch_markdown(tmp_path: Path) -> None:
    """The batch report from figures made of logs: both runs, the ratio, overheads, targets."""
    write_batch_logs(tmp_path / "big", {"big": (4.0, [("parquet_chunks", 1, 4, 3.0)])})
    write_batch_logs(tmp_path / "batch", {"a": (2.0, [("parquet_chunks", 1, 2, 1.0)]), "b": (2.0, [("parquet_chunks", 3, 4, 1.5)])})
    big = run_all_figures(fake_measurement(5.0, [(2.0, 500 * 2**20, 400 * 2**20)]), tmp_path / "big", LAUNCHED, 3000)
    batch = run_all_figures(fake_measurement(6.0, [(1.5, 700 * 2**20, 0), (3.5, 700 * 2**20, 0)]), tmp_path / "batch", LAUNCHED, 2000)
    result = {"inputs": {"big": {"cells": 3000}, "batch": {"files": 2, "cells_per_file": 1000}},
              "big": {**big, **runner._over_conversion_step(big)}, "batch": {**batch, **runner._over_conversion_step(batch)},
              "batch_over_big_cells_per_second": round(batch["cells_per_second"] / big["cells_per_second"], 3)}
    result["targets"] = judge_batch(result)
    machine = {"cpu_model": "cpu", "usable_cores": 2, "cores": 2, "memory_gb": 8, "os": "Linux", "python": "3.11", "versions": {},
               "commit": "abc", "load_average_at_start": [0, 0, 0]}
    text = report.markdown({"kind": "batch", "command": "cmd", "settings": Settings().describe(), "workers": 2, "machine": machine,
                            "seconds": 12.0, "result": result})
    assert "| `run-all` one big file | 1 | 3,000 | 5.00 s | 600 | 3.00 s | 2.00 s | 1.00 s / 1.00 s | 500 MB | 400 MB |" in text
    assert "| `run-all --batch-mode` | 2 | 2,000 | 6.00 s | 333 | 2.50 s | 4.00 s | 0.75 s / 1.00 s | 700 MB | unavailable |" in text
    assert "Batch 333 cells/s = 0.555x the big file's 600 cells/s" in text and "- preprocess workers: 2" in text
    assert "run-all = 1.67x its conversion step (3.00 s, 1,000 cells/s)" in text
    assert "| b | SUCCESS | 2.00 s | 1.50 s | 0.50 s | 1.50 s | 700 MB | unavailable |" in text
    assert "| batch_over_big_cells_per_second | 0.555 | >= 0.7 | **no** |" in text
    assert "| batch_peak_tree_rss_bytes | 700 MB | <= 1.5 GB | yes |" in text


def test_preprocess_command_batch_and_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run-all gets --batch-mode for a folder, --workers only when it is given, and the default
    instance of its folder."""
    commands = []
    monkeypatch.setattr(runner, "run_measured", lambda command, env, cwd: commands.append((command, env)) or fake_measurement(1.0, [(0, 1, 1)]))
    runner.preprocess_run_all(tmp_path / "in", Settings(), tmp_path / "one")
    runner.preprocess_run_all(tmp_path / "in", Settings(), tmp_path / "two", batch=True, workers=2)
    (first, env), (second, _) = commands
    assert first[1:4] == ["run-all", str(tmp_path / "in"), "--offline"] and "--batch-mode" not in first and "--workers" not in first
    assert second[-3:] == ["--batch-mode", "--workers", "2"]
    # no DAGSTER_HOME: the instance a user gets by default (root/.dagster, made by preprocess)
    assert "DAGSTER_HOME" not in env and (tmp_path / "one").is_dir()


def readable_pss() -> bool:
    try:
        return "Pss:" in Path("/proc/self/smaps_rollup").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not readable_pss(), reason="no readable /proc/<pid>/smaps_rollup")
def test_measure_tree_pss_of_forked_child() -> None:
    """A process touches 200 MB and forks: the tree RSS counts the shared pages twice, the tree
    PSS once (each process holds half), and no sample's PSS exceeds its RSS."""
    code = ("import os, time; b = b'x' * (200 * 2**20); pid = os.fork()\n"
            "if pid == 0: time.sleep(0.6); os._exit(0)\n"
            "os.waitpid(pid, 0); print('done')")
    measurement = run_measured([sys.executable, "-c", code], interval=0.02)
    assert measurement.exit_code == 0 and measurement.stdout.strip() == "done"
    assert measurement.peak_tree_pss_bytes >= 200 * 2**20
    assert measurement.peak_tree_rss_bytes >= 400 * 2**20
    assert measurement.peak_tree_pss_bytes <= 0.75 * measurement.peak_tree_rss_bytes
    assert all(pss <= rss for _, rss, pss in measurement.timeline)


def test_tree_memory_without_smaps_rollup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where smaps_rollup is unreadable, RSS still comes from statm and PSS is 0 (unavailable)."""
    import os

    from benchmarks import measure

    def no_smaps(path: str, *args: object):
        if str(path).endswith("smaps_rollup"):
            raise PermissionError(path)
        return open(path, *args)

    monkeypatch.setattr(measure, "open", no_smaps, raising=False)
    rss, pss = measure.tree_memory(os.getpid())
    assert rss > 0 and pss == 0

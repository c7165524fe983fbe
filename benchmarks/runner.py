"""Orchestration: make or reuse the input, run each measured child, check outputs, judge targets."""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.check import check_output
from benchmarks.machine import load_average, machine_info
from benchmarks.measure import Measurement, run_measured
from scrna_assets.core.sentences import DEFAULT_SEED, DEFAULT_TIE_BREAK
from scrna_assets.dataset_names import dataset_name

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MB = 1024 * 1024

# The targets (2-core machine, 20,000 genes, ~2,000 non-zeros per cell, top 2,000).
TARGET_CELLS_PER_SECOND = 10_000
TARGET_RUN_ALL_OVER_CONVERSION = 1.5
TARGET_SPEEDUP_OVER_NAIVE = 25
TARGET_PEAK_RSS_BYTES = 1.5e9
TARGET_RSS_GROWTH_10X = 1.2
TARGET_RANDOM_TIE_BREAK_COST_PERCENT = 10  # of conversion cells/s, against the position tie-break
CONVERSION_DATASET = "benchmark"  # the dataset name benchmarks.convert_child and benchmarks.naive convert under
STEPS = ("parquet_chunks", "aged_chunks", "train_test_splits", "hf_upload")


@dataclass
class Settings:
    cells: int = 100_000
    genes: int = 20_000
    nnz: int = 2000
    top_genes: int = 2000
    chunk_size: int = 10_000
    compression: str = "zstd"
    seed: int = 0
    input: Path | None = None
    naive_cells: int = 10_000
    check_cells: int = 300
    repeat: int = 1
    run_all: bool = True
    naive: bool = True
    threads: int | None = None
    work: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "scrna-benchmark")
    keep_outputs: bool = False
    tie_break_compare: bool = True
    """Also convert with the position tie-break (each repeat: random, then position) to measure
    what the random one costs."""

    def describe(self) -> dict:
        values = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


def synthetic_path(settings: Settings, cells: int) -> Path:
    name = f"synthetic_{cells}x{settings.genes}_nnz{settings.nnz}_seed{settings.seed}.h5ad"
    return settings.work / "inputs" / name


def input_file(settings: Settings, cells: int, log) -> tuple[Path, float | None]:
    """The given file, or a synthetic one made once and reused (the generator is deterministic)."""
    if settings.input is not None:
        return settings.input.resolve(), None
    path = synthetic_path(settings, cells)
    if path.exists():
        return path, None
    from scrna_assets.core.synthetic import write_synthetic_h5ad

    path.parent.mkdir(parents=True, exist_ok=True)
    log(f"generating {path.name} ...")
    started = time.perf_counter()
    write_synthetic_h5ad(path, cells, settings.genes, settings.nnz, seed=settings.seed)
    seconds = time.perf_counter() - started
    log(f"  generated in {seconds:.1f} s ({path.stat().st_size / MB:.0f} MB)")
    return path, seconds


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.parquet"))


def _child_json(measurement: Measurement) -> dict:
    if measurement.exit_code != 0:
        raise RuntimeError(f"{' '.join(measurement.command)} failed ({measurement.exit_code}):\n{measurement.stderr[-3000:]}")
    return json.loads(measurement.stdout.strip().splitlines()[-1])


def _figures(measurement: Measurement) -> dict:
    return {
        "wall_seconds": round(measurement.wall_seconds, 3),
        "cpu_seconds": round(measurement.user_seconds + measurement.system_seconds, 3),
        "other_load_cpu_seconds": round(measurement.other_cpu_seconds, 2),
        "peak_rss_bytes": measurement.peak_rss_bytes,
        "peak_tree_rss_bytes": measurement.peak_tree_rss_bytes,
    }


def conversion_folder(work: Path, tie_break: str) -> Path:
    """Output of the conversion child: ``conversion/chunks`` for the default tie-break."""
    return work / ("conversion" if tie_break == DEFAULT_TIE_BREAK else f"conversion-{tie_break}") / "chunks"


def _convert_once(path: Path, settings: Settings, work: Path, tie_break: str) -> dict:
    out = conversion_folder(work, tie_break)
    shutil.rmtree(out.parent, ignore_errors=True)
    command = [
        sys.executable, "-m", "benchmarks.convert_child", str(path), str(out),
        "--chunk-size", str(settings.chunk_size), "--top-genes", str(settings.top_genes),
        "--compression", settings.compression, "--tie-break", tie_break, "--dataset", CONVERSION_DATASET,
    ]
    if settings.threads:
        command += ["--threads", str(settings.threads)]
    measurement = run_measured(command, cwd=REPO)
    child = _child_json(measurement)
    return {
        **_figures(measurement),
        "convert_seconds": round(child["convert_seconds"], 3),
        "cells_per_second": round(child["cells"] / child["convert_seconds"]),
        "import_seconds": round(child["import_seconds"], 3),
        "rss_before_convert_bytes": child["rss_before_convert_bytes"],
        "output_bytes": folder_bytes(out),
        "chunk_files": child["chunk_files"],
        "cells": child["cells"],
    }


def _best(runs: list[dict], tie_break: str) -> dict:
    best = min(runs, key=lambda r: r["convert_seconds"])
    ordered = sorted(r["cells_per_second"] for r in runs)
    return {**best, "tie_break": tie_break, "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
            "median_cells_per_second": ordered[len(ordered) // 2], "runs": runs}


def run_conversions(path: Path, settings: Settings, work: Path, tie_breaks: tuple[str, ...]) -> dict[str, dict]:
    """``convert_h5ad`` alone, in a child process, with each tie-break; the runs alternate (so a
    change of load on the machine hits both alike) and the best of ``repeat`` is reported."""
    runs: dict[str, list[dict]] = {t: [] for t in tie_breaks}
    for _ in range(max(1, settings.repeat)):
        for tie_break in tie_breaks:
            runs[tie_break].append(_convert_once(path, settings, work, tie_break))
    return {t: _best(r, t) for t, r in runs.items()}


def run_conversion(path: Path, settings: Settings, work: Path, tie_break: str = DEFAULT_TIE_BREAK) -> dict:
    """``convert_h5ad`` alone with one tie-break; the best of ``repeat`` runs by time."""
    return run_conversions(path, settings, work, (tie_break,))[tie_break]


def tie_break_cost(random: dict, position: dict) -> dict:
    """What the random tie-break costs: cells/s of the best runs, and the median runs."""
    best = round(100 * (1 - random["cells_per_second"] / position["cells_per_second"]), 1)
    median = round(100 * (1 - random["median_cells_per_second"] / position["median_cells_per_second"]), 1)
    cpu = round(100 * (random["cpu_seconds"] / position["cpu_seconds"] - 1), 1) if position["cpu_seconds"] else None
    return {"random_cells_per_second": random["cells_per_second"], "position_cells_per_second": position["cells_per_second"],
            "cost_percent": best, "median_cost_percent": median, "cpu_cost_percent_of_best_runs": cpu, "runs_each": len(random["runs"])}


def _step_times(log_file: Path, launched: float) -> dict[str, dict]:
    """Per asset: start and end (seconds after launch) from the dataset's pipeline.log."""
    steps: dict[str, dict] = {}
    if not log_file.exists():
        return steps
    for line in log_file.read_text().splitlines():
        match = re.match(r"(\S+)\s+\w+\s+\[[^\]]*\] (\w+): (start|end)", line)
        if not match:
            continue
        stamp = datetime.datetime.fromisoformat(match.group(1)).timestamp() - launched
        steps.setdefault(match.group(2), {})[match.group(3)] = stamp
    return {k: v for k, v in steps.items() if "start" in v and "end" in v}


def run_run_all(path: Path, settings: Settings, work: Path) -> dict:
    """``preprocess run-all FILE --offline`` with its own DAGSTER_HOME and folders."""
    root = work / "run_all"
    shutil.rmtree(root, ignore_errors=True)
    home = root / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRNA_", "DAGSTER_HOME", "HF_"))}
    env["DAGSTER_HOME"] = str(home)
    command = [
        str(BIN / "preprocess"), "run-all", str(path), "--offline",
        "--input-dir", str(root / "input"), "--interim-dir", str(root / "interim"),
        "--output-dir", str(root / "output"), "--log-dir", str(root / "logs"),
        "--chunk-size", str(settings.chunk_size), "--top-genes", str(settings.top_genes),
        "--compression", settings.compression,
    ]
    launched = time.time()
    measurement = run_measured(command, env=env, cwd=root)
    dataset = dataset_name(path)
    problems = [line.strip() for line in measurement.stdout.splitlines() if line.lstrip().startswith("✗")]
    steps = _step_times(root / "logs" / dataset / "pipeline.log", launched)
    in_steps = 0.0
    breakdown = {}
    for name in STEPS:
        if name in steps:
            start, end = steps[name]["start"], steps[name]["end"]
            in_steps += end - start
            breakdown[name] = {"seconds": round(end - start, 3), "peak_tree_rss_bytes": measurement.peak_between(start, end)}
    first_start = min((s["start"] for s in steps.values()), default=0.0)
    output = root / "output" / dataset
    return {
        **_figures(measurement),
        "exit_code": measurement.exit_code,
        "problems": problems or ([measurement.stderr.strip()[-500:]] if measurement.exit_code else []),
        "steps": breakdown,
        "outside_steps_seconds": round(measurement.wall_seconds - in_steps, 3),
        "before_first_step_seconds": round(first_start, 3),
        "output_bytes": folder_bytes(output),
        "output_files": sorted(str(p) for p in output.rglob("chunk_*.parquet")),
    }


def run_naive(path: Path, settings: Settings, work: Path, n_cells: int) -> dict:
    out = work / "naive" / "chunks"
    shutil.rmtree(out.parent, ignore_errors=True)
    command = [
        sys.executable, "-m", "benchmarks.naive", str(path), str(out), "--cells", str(n_cells),
        "--chunk-size", str(settings.chunk_size), "--top-genes", str(settings.top_genes),
        "--compression", settings.compression, "--dataset", CONVERSION_DATASET,
        "--tie-break", DEFAULT_TIE_BREAK, "--seed", str(DEFAULT_SEED),
    ]
    measurement = run_measured(command, cwd=REPO)
    child = _child_json(measurement)
    return {
        **_figures(measurement),
        "cells": child["cells"],
        "convert_seconds": round(child["convert_seconds"], 3),
        "cells_per_second": round(child["cells"] / child["convert_seconds"], 1),
        "output_dir": str(out),
    }


def _same_sentences(fast_dir: Path, naive_dir: Path) -> bool:
    """The naive output's sentences and counts equal the fast path's first cells (compared file
    by file: both are cut at the same chunk size, and only as many fast files as naive ones)."""
    import pyarrow.parquet as pq

    columns = ["cell_id", "cell_sentence", "n_genes"]
    naive_files = sorted(naive_dir.glob("chunk_*.parquet"))
    fast_files = sorted(fast_dir.glob("chunk_*.parquet"))[: len(naive_files)]
    if len(fast_files) != len(naive_files):
        return False
    for naive_file, fast_file in zip(naive_files, fast_files):
        naive = pq.read_table(naive_file, columns=columns)
        if not naive.equals(pq.read_table(fast_file, columns=columns).slice(0, naive.num_rows)):
            return False
    return True


def benchmark_file(settings: Settings, cells: int, log=print) -> dict:
    """All measurements for one input file."""
    path, generated = input_file(settings, cells, log)
    work = settings.work / "runs" / path.stem
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"input": {"path": str(path), "bytes": path.stat().st_size, "generation_seconds": generated}}
    other = "position" if DEFAULT_TIE_BREAK == "random" else "random"
    tie_breaks = (DEFAULT_TIE_BREAK, other) if settings.tie_break_compare else (DEFAULT_TIE_BREAK,)
    log(f"[{path.name}] conversion alone ({' and '.join(f'tie-break {t}' for t in tie_breaks)}) ...")
    conversions = run_conversions(path, settings, work, tie_breaks)
    conversion = conversions[DEFAULT_TIE_BREAK]
    result["input"]["cells"] = conversion["cells"]
    result["conversion"] = conversion
    log(f"  {conversion['cells_per_second']:,} cells/s, {conversion['convert_seconds']:.2f} s, peak RSS {conversion['peak_rss_bytes'] / MB:.0f} MB")
    result["check_conversion"] = check_output(
        path, sorted(conversion_folder(work, DEFAULT_TIE_BREAK).glob("chunk_*.parquet")), settings.top_genes, settings.check_cells,
        settings.seed, tie_break=DEFAULT_TIE_BREAK, tie_seed=DEFAULT_SEED, dataset=CONVERSION_DATASET,
    )
    log(f"  sample check: {result['check_conversion']}")
    if settings.tie_break_compare:
        compared = conversions[other]
        result[f"conversion_{other}"] = compared
        result[f"check_conversion_{other}"] = check_output(
            path, sorted(conversion_folder(work, other).glob("chunk_*.parquet")), settings.top_genes, settings.check_cells,
            settings.seed, tie_break=other, tie_seed=DEFAULT_SEED, dataset=CONVERSION_DATASET,
        )
        random, position = (conversion, compared) if other == "position" else (compared, conversion)
        result["tie_break_cost"] = tie_break_cost(random, position)
        log(f"  tie-break {other}: {compared['cells_per_second']:,} cells/s; the random tie-break costs "
            f"{result['tie_break_cost']['cost_percent']} % (median runs {result['tie_break_cost']['median_cost_percent']} %); "
            f"sample check: {result[f'check_conversion_{other}']}")
    if settings.run_all:
        log(f"[{path.name}] preprocess run-all ...")
        run_all = run_run_all(path, settings, work)
        run_all["cells_per_second"] = round(conversion["cells"] / run_all["wall_seconds"])
        run_all["over_conversion"] = round(run_all["wall_seconds"] / conversion["convert_seconds"], 2)
        files = [Path(p) for p in run_all.pop("output_files")]
        result["check_run_all"] = check_output(path, files, settings.top_genes, settings.check_cells, settings.seed, require_all=False,
                                               tie_break=DEFAULT_TIE_BREAK, tie_seed=DEFAULT_SEED, dataset=dataset_name(path))
        result["run_all"] = run_all
        log(f"  {run_all['wall_seconds']:.1f} s ({run_all['over_conversion']}x the conversion), peak RSS {run_all['peak_rss_bytes'] / MB:.0f} MB")
        if run_all["exit_code"]:
            log(f"  run-all exited with {run_all['exit_code']}: {'; '.join(run_all['problems'])}")
        log(f"  steps: " + ", ".join(f"{k} {v['seconds']:.1f} s" for k, v in run_all["steps"].items()) + f"; outside steps {run_all['outside_steps_seconds']:.1f} s")
        log(f"  sample check: {result['check_run_all']}")
    if settings.naive and settings.naive_cells > 0:
        n = min(settings.naive_cells, conversion["cells"])
        log(f"[{path.name}] naive reference on {n:,} cells ...")
        naive = run_naive(path, settings, work, n)
        naive["same_sentences_as_fast_path"] = _same_sentences(conversion_folder(work, DEFAULT_TIE_BREAK), Path(naive.pop("output_dir")))
        naive["speedup_of_fast_path"] = round(conversion["cells_per_second"] / naive["cells_per_second"], 1)
        result["naive"] = naive
        log(f"  {naive['cells_per_second']:,} cells/s: the fast path is {naive['speedup_of_fast_path']}x faster; same sentences: {naive['same_sentences_as_fast_path']}")
    if not settings.keep_outputs:
        shutil.rmtree(work, ignore_errors=True)
    result["targets"] = judge(result)
    return result


def judge(result: dict) -> dict:
    conversion = result["conversion"]
    targets = {
        "conversion_cells_per_second": _target(conversion["cells_per_second"], ">=", TARGET_CELLS_PER_SECOND),
        "conversion_peak_rss_bytes": _target(conversion["peak_rss_bytes"], "<=", TARGET_PEAK_RSS_BYTES),
    }
    checks = [result["check_conversion"]["ok"], result.get("check_run_all", {"ok": True})["ok"]]
    checks += [result[k]["ok"] for k in result if k.startswith("check_conversion_")]
    if None not in checks:  # None: not checked (not a CSR input)
        targets["output_matches_contract"] = _target(all(checks), "==", True)
    if "run_all" in result:
        targets["run_all_succeeded"] = _target(result["run_all"]["exit_code"], "==", 0)
        targets["run_all_over_conversion"] = _target(result["run_all"]["over_conversion"], "<=", TARGET_RUN_ALL_OVER_CONVERSION)
        targets["run_all_peak_rss_bytes"] = _target(result["run_all"]["peak_rss_bytes"], "<=", TARGET_PEAK_RSS_BYTES)
    if "tie_break_cost" in result:
        targets["random_tie_break_cost_percent"] = _target(result["tie_break_cost"]["cost_percent"], "<=", TARGET_RANDOM_TIE_BREAK_COST_PERCENT)
    if "naive" in result:
        targets["speedup_over_naive"] = _target(result["naive"]["speedup_of_fast_path"], ">=", TARGET_SPEEDUP_OVER_NAIVE)
        targets["naive_sentences_equal"] = _target(result["naive"]["same_sentences_as_fast_path"], "==", True)
    return targets


def _target(value, relation: str, limit) -> dict:
    met = {">=": value >= limit, "<=": value <= limit, "==": value == limit}[relation]
    wanted = str(limit) if isinstance(limit, bool) else f"{relation} {limit:g}"
    return {"value": value, "target": wanted, "met": bool(met)}


def run_benchmark(settings: Settings, command: str, log=print) -> dict:
    info = machine_info(REPO)
    started = time.perf_counter()
    result = benchmark_file(settings, settings.cells, log)
    info["load_average_at_end"] = load_average()
    return {"kind": "single", "command": command, "settings": settings.describe(), "machine": info,
            "seconds": round(time.perf_counter() - started, 1), "result": result}


def run_scaling(settings: Settings, sizes: list[int], command: str, log=print) -> dict:
    info = machine_info(REPO)
    started = time.perf_counter()
    results = {}
    for cells in sizes:
        results[cells] = benchmark_file(settings, cells, log)
    info["load_average_at_end"] = load_average()
    ratios = scaling_ratios(results)
    return {"kind": "scaling", "command": command, "settings": settings.describe(), "machine": info,
            "seconds": round(time.perf_counter() - started, 1), "results": {str(k): v for k, v in results.items()}, "ratios": ratios}


def scaling_ratios(results: dict[int, dict]) -> list[dict]:
    """Each size against the smallest: cells, time, throughput and peak RSS ratios."""
    sizes = sorted(results)
    base = results[sizes[0]]
    ratios = []
    for cells in sizes[1:]:
        current = results[cells]
        row = {
            "from_cells": sizes[0],
            "to_cells": cells,
            "cells_ratio": round(cells / sizes[0], 2),
            "conversion_time_ratio": round(current["conversion"]["convert_seconds"] / base["conversion"]["convert_seconds"], 2),
            "conversion_cells_per_second_ratio": round(current["conversion"]["cells_per_second"] / base["conversion"]["cells_per_second"], 2),
            "conversion_peak_rss_ratio": round(current["conversion"]["peak_rss_bytes"] / base["conversion"]["peak_rss_bytes"], 3),
        }
        if "run_all" in current and "run_all" in base:
            row["run_all_time_ratio"] = round(current["run_all"]["wall_seconds"] / base["run_all"]["wall_seconds"], 2)
            row["run_all_peak_rss_ratio"] = round(current["run_all"]["peak_rss_bytes"] / base["run_all"]["peak_rss_bytes"], 3)
        growth_ok = row["conversion_peak_rss_ratio"] <= TARGET_RSS_GROWTH_10X and row.get("run_all_peak_rss_ratio", 0) <= TARGET_RSS_GROWTH_10X
        row["rss_growth_target_met"] = growth_ok
        ratios.append(row)
    return ratios

"""Orchestration: make or reuse the input, run each measured child, check outputs, judge targets."""

from __future__ import annotations

import datetime
import json
import operator
import os
import shutil
import statistics
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
# The batch issue's targets (``batch`` mode: many small files against one big one).
TARGET_BATCH_OVER_BIG_CELLS_PER_SECOND = 0.70
TARGET_OVERHEAD_PER_FILE_SECONDS = 0.5  # a dataset process's seconds outside its steps' own work
TARGET_RUN_ALL_OVER_CONVERSION_STEP = 1.6  # run-all wall / its parquet_chunks step
TARGET_CONVERSION_STEP_CELLS_PER_SECOND = 15_000
TARGET_PEAK_TREE_MEMORY_BYTES = 1.5e9  # the whole process tree (preprocess forks dataset processes)
TARGET_BATCH_MEMORY_GROWTH = 1.2  # "flat": the last file's peak over the first's (the issue gives no figure)
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
    """Codec of the output files, and of the conversion alone and the naive reference (compared like for like)."""
    interim_compression: str = "lz4"
    """Codec of ``run-all``'s interim chunks (the pipeline's default)."""
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


def _synthetic(path: Path, cells: int, settings: Settings, seed: int, log) -> float | None:
    """Write ``path`` unless it exists: the generator is deterministic and renames a whole file
    into place, so a file found is the one it would write. Seconds spent, None if reused."""
    if path.exists():
        return None
    from scrna_assets.core.synthetic import write_synthetic_h5ad

    path.parent.mkdir(parents=True, exist_ok=True)
    log(f"generating {path.name} ...")
    started = time.perf_counter()
    write_synthetic_h5ad(path, cells, settings.genes, settings.nnz, seed=seed)
    seconds = time.perf_counter() - started
    log(f"  generated in {seconds:.1f} s ({path.stat().st_size / MB:.0f} MB)")
    return seconds


def input_file(settings: Settings, cells: int, log) -> tuple[Path, float | None]:
    """The given file, or a synthetic one made once and reused."""
    if settings.input is not None:
        return settings.input.resolve(), None
    path = synthetic_path(settings, cells)
    return path, _synthetic(path, cells, settings, settings.seed, log)


def batch_inputs(settings: Settings, files: int, cells: int, log) -> tuple[Path, float | None]:
    """A folder of ``files`` synthetic files, file ``i`` with seed ``seed + i`` (distinct data),
    made once and reused. The folder holds nothing else: ``--batch-mode`` takes every *.h5ad."""
    folder = settings.work / "inputs" / f"batch_{files}x{cells}x{settings.genes}_nnz{settings.nnz}_seed{settings.seed}"
    spent = [_synthetic(folder / f"part_{i:03d}_seed{settings.seed + i}.h5ad", cells, settings, settings.seed + i, log) for i in range(files)]
    made = [s for s in spent if s is not None]
    return folder, (round(sum(made), 1) if made else None)


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
        "peak_tree_pss_bytes": measurement.peak_tree_pss_bytes,
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


def step_times(pipeline_json: Path, launched: float) -> dict[str, dict]:
    """Per step of one dataset, from its ``pipeline.json``: start and end (seconds after launch)
    and the step's own seconds (its ``seconds`` figure, else end - start: a skipped upload
    reports none). Only steps that ended; a step run twice counts its last run."""
    steps: dict[str, dict] = {}
    if not pipeline_json.exists():
        return steps
    for line in pipeline_json.read_text().splitlines():
        record = json.loads(line)
        if record.get("event") not in ("start", "end"):
            continue
        stamp = datetime.datetime.fromisoformat(record["time"]).timestamp() - launched
        if record["event"] == "start":
            steps[record["step"]] = {"start": stamp}
        elif record["step"] in steps:
            step = steps[record["step"]]
            step["end"] = stamp
            step["seconds"] = round(float(record.get("figures", {}).get("seconds", stamp - step["start"])), 3)
    return {k: v for k, v in steps.items() if "end" in v}


def _peaks(measurement: Measurement, start: float | None, end: float | None) -> dict[str, int]:
    """The tree's peak RSS and PSS sampled between ``start`` and ``end`` (0: no sample, or no window)."""
    if start is None or end is None:
        return {"peak_tree_rss_bytes": 0, "peak_tree_pss_bytes": 0}
    return {"peak_tree_rss_bytes": measurement.peak_between(start, end), "peak_tree_pss_bytes": measurement.peak_between(start, end, pss=True)}


def step_breakdown(steps: dict[str, dict], measurement: Measurement) -> dict[str, dict]:
    """Per step (pipeline order): its own seconds and the tree's peak RSS and PSS while it ran."""
    return {name: {"seconds": steps[name]["seconds"], **_peaks(measurement, steps[name]["start"], steps[name]["end"])}
            for name in STEPS if name in steps}


def preprocess_run_all(target: Path, settings: Settings, root: Path, batch: bool = False, workers: int | None = None) -> tuple[Measurement, float]:
    """``preprocess run-all TARGET --offline`` (``--batch-mode`` for a folder) in a fresh ``root``
    with its own input/interim/output/log folders and no DAGSTER_HOME, so it uses the instance a
    user gets by default (``root/.dagster``), and no earlier run or the caller's SCRNA_/HF_
    settings change it. Returns the measurement and the launch time (epoch)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRNA_", "DAGSTER_HOME", "HF_"))}
    command = [
        str(BIN / "preprocess"), "run-all", str(target), "--offline",
        "--input-dir", str(root / "input"), "--interim-dir", str(root / "interim"),
        "--output-dir", str(root / "output"), "--log-dir", str(root / "logs"),
        "--chunk-size", str(settings.chunk_size), "--top-genes", str(settings.top_genes),
        "--compression", settings.compression, "--interim-compression", settings.interim_compression,
    ]
    command += ["--batch-mode"] if batch else []
    command += ["--workers", str(workers)] if workers is not None else []
    launched = time.time()
    return run_measured(command, env=env, cwd=root), launched


def _problems(measurement: Measurement) -> list[str]:
    """The ✗ lines preprocess printed, else the end of stderr if it failed."""
    problems = [line.strip() for line in measurement.stdout.splitlines() if line.lstrip().startswith("✗")]
    return problems or ([measurement.stderr.strip()[-500:]] if measurement.exit_code else [])


def run_run_all(path: Path, settings: Settings, work: Path) -> dict:
    """``preprocess run-all FILE --offline`` with its own DAGSTER_HOME and folders."""
    root = work / "run_all"
    measurement, launched = preprocess_run_all(path, settings, root)
    dataset = dataset_name(path)
    steps = step_times(root / "logs" / dataset / "pipeline.json", launched)
    breakdown = step_breakdown(steps, measurement)
    first_start = min((s["start"] for s in steps.values()), default=0.0)
    output = root / "output" / dataset
    return {
        **_figures(measurement),
        "exit_code": measurement.exit_code,
        "problems": _problems(measurement),
        "steps": breakdown,
        "outside_steps_seconds": round(measurement.wall_seconds - sum(s["seconds"] for s in breakdown.values()), 3),
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
    """``value`` against ``limit``; None (not measured, e.g. a run that failed) is not met."""
    met = value is not None and {">=": operator.ge, "<=": operator.le, "==": operator.eq}[relation](value, limit)
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


def per_file_overhead(summary: list[dict], step_seconds: dict[str, dict[str, float]]) -> dict:
    """Per dataset: the seconds its process took as the parent saw it (``batch_summary.json``)
    minus its steps' own seconds, i.e. start-up, Dagster's run, cleanup: everything that is not
    a step's work, paid again for every file. Median and max over the files (None if none)."""
    per_file = {row["dataset"]: round(row["seconds"] - sum(step_seconds.get(row["dataset"], {}).values()), 3) for row in summary}
    values = list(per_file.values())
    return {"median_seconds": round(statistics.median(values), 3) if values else None,
            "max_seconds": max(values, default=None), "per_file": per_file}


def covered_seconds(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one (start, end) interval: the wall time some step ran, even
    where dataset processes ran at once."""
    covered, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            covered += end - max(start, reach)
            reach = end
    return covered


def memory_growth(datasets: dict[str, dict], key: str) -> float | None:
    """The peak ``key`` while the last dataset (by start) ran over that of the first: 1.0 is flat."""
    ordered = sorted((d for d in datasets.values() if d.get("start") is not None), key=lambda d: d["start"])
    if len(ordered) < 2 or not ordered[0][key]:
        return None
    return round(ordered[-1][key] / ordered[0][key], 3)


def _dataset_figures(row: dict, steps: dict[str, dict], measurement: Measurement) -> dict:
    """One dataset of a run: outcome, process seconds, steps, and the tree's peaks from its first
    step's start to its last step's end (where its data work is)."""
    start = min((s["start"] for s in steps.values()), default=None)
    end = max((s["end"] for s in steps.values()), default=None)
    return {
        "status": row["status"], "cells": row.get("cells_read", 0), "process_seconds": row["seconds"],
        "start": None if start is None else round(start, 3), "steps": step_breakdown(steps, measurement),
        **_peaks(measurement, start, end),
    }


def run_all_figures(measurement: Measurement, log_dir: Path, launched: float, cells: int) -> dict:
    """A ``run-all`` (one file or a batch) from its measurement and logs: cells/s over the wall
    time, the steps' own seconds summed (their work; more than the wall time where datasets ran
    at once), the wall time no step ran, the per-file overhead, and per dataset its figures."""
    summary_file = log_dir / "batch_summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else []
    steps = {row["dataset"]: step_times(log_dir / row["dataset"] / "pipeline.json", launched) for row in summary}
    datasets = {row["dataset"]: _dataset_figures(row, steps[row["dataset"]], measurement) for row in summary}
    step_seconds = {name: {k: v["seconds"] for k, v in d["steps"].items()} for name, d in datasets.items()}
    totals: dict[str, float] = {}
    for seconds in step_seconds.values():
        for step, value in seconds.items():
            totals[step] = round(totals.get(step, 0.0) + value, 3)
    in_steps = sum(totals.values())
    covered = covered_seconds([(s["start"], s["end"]) for by_step in steps.values() for s in by_step.values()])
    return {
        **_figures(measurement),
        "exit_code": measurement.exit_code,
        "problems": _problems(measurement),
        "files": len(summary),
        "failed_files": sum(row["status"] == "FAILED" for row in summary),
        "cells": cells,
        "cells_per_second": round(cells / measurement.wall_seconds),
        "step_seconds": totals,
        "in_steps_seconds": round(in_steps, 3),
        "outside_steps_seconds": round(measurement.wall_seconds - covered, 3),
        "overhead": per_file_overhead(summary, step_seconds),
        "memory_growth_pss": memory_growth(datasets, "peak_tree_pss_bytes"),
        "memory_growth_rss": memory_growth(datasets, "peak_tree_rss_bytes"),
        "datasets": datasets,
    }


def _over_conversion_step(run: dict) -> dict:
    """The whole run-all against its own conversion step: wall / step seconds, and the step's cells/s."""
    step = run["step_seconds"].get("parquet_chunks")
    if not step:
        return {"over_conversion_step": None, "conversion_step_cells_per_second": None}
    return {"over_conversion_step": round(run["wall_seconds"] / step, 2), "conversion_step_cells_per_second": round(run["cells"] / step)}


def tree_memory_figure(run: dict) -> tuple[str, int]:
    """The figure the memory target judges: peak tree PSS (what the tree really holds), or the
    tree RSS (which double-counts copy-on-write pages) where PSS is unavailable."""
    return ("pss", run["peak_tree_pss_bytes"]) if run["peak_tree_pss_bytes"] else ("rss", run["peak_tree_rss_bytes"])


def judge_batch(result: dict) -> dict:
    """The batch issue's targets from a ``batch`` result's ``big`` and ``batch`` runs and ratio."""
    big, batch = result["big"], result["batch"]
    targets = {
        "big_run_all_succeeded": _target(big["exit_code"], "==", 0),
        "batch_run_all_succeeded": _target(batch["exit_code"], "==", 0),
        "batch_over_big_cells_per_second": _target(result["batch_over_big_cells_per_second"], ">=", TARGET_BATCH_OVER_BIG_CELLS_PER_SECOND),
        "batch_overhead_per_file_max_seconds": _target(batch["overhead"]["max_seconds"], "<=", TARGET_OVERHEAD_PER_FILE_SECONDS),
        "big_run_all_over_conversion_step": _target(big["over_conversion_step"], "<=", TARGET_RUN_ALL_OVER_CONVERSION_STEP),
        "big_conversion_step_cells_per_second": _target(big["conversion_step_cells_per_second"], ">=", TARGET_CONVERSION_STEP_CELLS_PER_SECOND),
    }
    for name, run in (("big", big), ("batch", batch)):
        kind, value = tree_memory_figure(run)
        targets[f"{name}_peak_tree_{kind}_bytes"] = _target(value, "<=", TARGET_PEAK_TREE_MEMORY_BYTES)
    kind = tree_memory_figure(batch)[0]
    targets[f"batch_memory_growth_{kind}"] = _target(batch[f"memory_growth_{kind}"], "<=", TARGET_BATCH_MEMORY_GROWTH)
    return targets


def _run_all_case(target: Path, settings: Settings, root: Path, cells: int, batch: bool, workers: int | None) -> dict:
    measurement, launched = preprocess_run_all(target, settings, root, batch=batch, workers=workers)
    run = run_all_figures(measurement, root / "logs", launched, cells)
    return {**run, **_over_conversion_step(run)}


def _log_run(run: dict, log) -> None:
    overhead = run["overhead"]
    log(f"  {run['wall_seconds']:.1f} s, {run['cells_per_second']:,} cells/s; steps {run['in_steps_seconds']:.1f} s, "
        f"overhead per file median {overhead['median_seconds']} s, max {overhead['max_seconds']} s; "
        f"peak tree RSS {run['peak_tree_rss_bytes'] / MB:.0f} MB, PSS {run['peak_tree_pss_bytes'] / MB:.0f} MB")
    if run["exit_code"]:
        log(f"  run-all exited with {run['exit_code']}: {'; '.join(run['problems'])}")


def run_batch_benchmark(settings: Settings, files: int, cells_per_file: int, workers: int | None, command: str, log=print) -> dict:
    """One big file and a batch of small ones, each a whole ``run-all`` in the same benchmark run
    (so machine load hits both alike): what the batch costs per cell against one big file."""
    info = machine_info(REPO)
    started = time.perf_counter()
    big_path, big_generated = input_file(settings, settings.cells, log)
    folder, batch_generated = batch_inputs(settings, files, cells_per_file, log)
    work = settings.work / "runs" / folder.name
    log(f"[{big_path.name}] preprocess run-all ...")
    big = _run_all_case(big_path, settings, work / "big", settings.cells, batch=False, workers=workers)
    _log_run(big, log)
    log(f"[{folder.name}] preprocess run-all --batch-mode ...")
    batch = _run_all_case(folder, settings, work / "batch", files * cells_per_file, batch=True, workers=workers)
    _log_run(batch, log)
    if not settings.keep_outputs:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "inputs": {"big": {"path": str(big_path), "cells": settings.cells, "generation_seconds": None if big_generated is None else round(big_generated, 1)},
                   "batch": {"folder": str(folder), "files": files, "cells_per_file": cells_per_file, "generation_seconds": batch_generated}},
        "big": big,
        "batch": batch,
        "batch_over_big_cells_per_second": round(batch["cells_per_second"] / big["cells_per_second"], 3),
    }
    result["targets"] = judge_batch(result)
    info["load_average_at_end"] = load_average()
    return {"kind": "batch", "command": command, "settings": settings.describe(), "workers": workers, "machine": info,
            "seconds": round(time.perf_counter() - started, 1), "result": result}

"""Markdown (and JSON) of a benchmark result."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

MB = 1024 * 1024


def _mb(value: int | float | None) -> str:
    return "–" if value is None else f"{value / MB:,.0f} MB"


def _pss(value: int | None, available: bool | None = None) -> str:
    """A PSS figure, or "unavailable" where smaps_rollup could not be read: a run's peak of 0.
    A step's or file's figure takes its run's ``available``: its own 0 may mean no sample fell
    inside it (shorter than the sampling interval)."""
    return _mb(value) if (bool(value) if available is None else available) else "unavailable"


def _steps(steps: dict[str, dict], pss_available: bool) -> str:
    """Steps with their own seconds and the tree's peak RSS and PSS while each ran."""
    return ", ".join(f"{k} {v['seconds']:.1f} s (peak {_mb(v['peak_tree_rss_bytes'])}, PSS {_pss(v.get('peak_tree_pss_bytes'), pss_available)})"
                     for k, v in steps.items())


def _machine(info: dict) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
    return [
        f"- Machine: {info['cpu_model']}, {info['usable_cores']} usable cores of {info['cores']}, {info['memory_gb']} GB RAM, {info['os']}",
        f"- Python {info['python']}; {versions}; commit {info['commit']}",
        f"- Load average at start {info['load_average_at_start']}, at end {info.get('load_average_at_end')} "
        "(other work on the machine slows the figures down)",
    ]


def _rows(cells: int, result: dict) -> list[str]:
    c = result["conversion"]
    lines = [f"| conversion alone | {cells:,} | {c['convert_seconds']:.2f} s | {c['cells_per_second']:,} | {_mb(c['peak_rss_bytes'])} | {_mb(c['output_bytes'])} |"]
    for key in sorted(k for k in result if k.startswith("conversion_")):
        o = result[key]
        lines.append(f"| conversion, tie-break {o['tie_break']} | {cells:,} | {o['convert_seconds']:.2f} s | {o['cells_per_second']:,} "
                     f"| {_mb(o['peak_rss_bytes'])} | {_mb(o['output_bytes'])} |")
    if "run_all" in result:
        r = result["run_all"]
        lines.append(f"| whole `run-all` | {cells:,} | {r['wall_seconds']:.2f} s | {r['cells_per_second']:,} | {_mb(r['peak_rss_bytes'])} | {_mb(r['output_bytes'])} |")
    if "naive" in result:
        n = result["naive"]
        lines.append(f"| naive reference | {n['cells']:,} | {n['convert_seconds']:.2f} s | {n['cells_per_second']:,.0f} | {_mb(n['peak_rss_bytes'])} | – |")
    return lines


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value}x"


HEADER = ["| run | cells | time | cells/s | peak RSS | output |", "|---|---:|---:|---:|---:|---:|"]


def _details(cells: int, result: dict) -> list[str]:
    lines = []
    c = result["conversion"]
    runs = c.get("runs", [])
    repeat = f"best of {len(runs)} runs (median {c['median_cells_per_second']:,} cells/s); " if len(runs) > 1 else ""
    lines.append(f"- {cells:,} cells: input {_mb(result['input']['bytes'])}; conversion (tie-break {c.get('tie_break', 'random')}): "
                 f"{repeat}CPU {c['cpu_seconds']:.1f} s for "
                 f"{c['convert_seconds']:.2f} s of conversion (+{c['import_seconds']:.1f} s of imports); RSS before converting "
                 f"{_mb(c['rss_before_convert_bytes'])}; other processes used {c['other_load_cpu_seconds']:.1f} CPU s meanwhile")
    if "tie_break_cost" in result:
        t = result["tie_break_cost"]
        lines.append(f"  - random tie-break: {t['random_cells_per_second']:,} cells/s against {t['position_cells_per_second']:,} with "
                     f"the position tie-break (best of {t['runs_each']} alternating runs each): costs {t['cost_percent']} % of "
                     f"throughput (median runs {t['median_cost_percent']} %, CPU of the best runs {t['cpu_cost_percent_of_best_runs']} %)")
    if "run_all" in result:
        r = result["run_all"]
        steps = _steps(r["steps"], bool(r.get("peak_tree_pss_bytes")))
        if r.get("exit_code"):
            lines.append(f"  - **run-all exited with {r['exit_code']}**: {'; '.join(r['problems'])}")
        lines.append(f"  - run-all = {r['over_conversion']}x the conversion: {steps}; outside the steps (start-up, imports, Dagster runs) "
                     f"{r['outside_steps_seconds']:.1f} s, of which {r['before_first_step_seconds']:.1f} s before the conversion starts; "
                     f"other processes used {r['other_load_cpu_seconds']:.1f} CPU s meanwhile")
    if "naive" in result:
        n = result["naive"]
        lines.append(f"  - fast path {n['speedup_of_fast_path']}x the naive reference; naive sentences equal: {n['same_sentences_as_fast_path']}")
    checks = [f"conversion {result['check_conversion']}"]
    checks += [f"conversion, tie-break {k.rsplit('_', 1)[1]} {result[k]}" for k in sorted(result) if k.startswith("check_conversion_")]
    if "check_run_all" in result:
        checks.append(f"run-all {result['check_run_all']}")
    lines.append("  - sample check against a per-cell computation: " + "; ".join(checks))
    return lines


def _targets(targets: dict) -> list[str]:
    lines = ["| target | value | wanted | met |", "|---|---:|---:|:---:|"]
    for name, t in targets.items():
        value = t["value"]
        shown = _mb(value) if name.endswith("_bytes") else (f"{value:,}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value))
        wanted = t["target"]
        if name.endswith("_bytes"):
            relation, limit = wanted.split(" ", 1)
            wanted = f"{relation} {float(limit) / 1e9:g} GB"
        lines.append(f"| {name} | {shown} | {wanted} | {'yes' if t['met'] else '**no**'} |")
    return lines


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


def _batch_rows(result: dict) -> list[str]:
    lines = ["| run | files | cells | wall | cells/s | steps' own seconds, summed | wall with no step running "
             "| overhead per file, median / max | peak tree RSS | peak tree PSS |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, run in (("`run-all` one big file", result["big"]), ("`run-all --batch-mode`", result["batch"])):
        o = run["overhead"]
        lines.append(f"| {label} | {run['files']} | {run['cells']:,} | {run['wall_seconds']:.2f} s | {run['cells_per_second']:,} "
                     f"| {run['in_steps_seconds']:.2f} s | {run['outside_steps_seconds']:.2f} s | {_seconds(o['median_seconds'])} / {_seconds(o['max_seconds'])} "
                     f"| {_mb(run['peak_tree_rss_bytes'])} | {_pss(run['peak_tree_pss_bytes'])} |")
    return lines


def _batch_details(result: dict) -> list[str]:
    big, batch = result["big"], result["batch"]
    inputs = result["inputs"]["batch"]
    lines = [f"- Batch {batch['cells_per_second']:,} cells/s = {result['batch_over_big_cells_per_second']}x the big file's "
             f"{big['cells_per_second']:,} cells/s ({inputs['files']} files of {inputs['cells_per_file']:,} cells against one of "
             f"{result['inputs']['big']['cells']:,})"]
    for label, run in (("big file", big), ("batch", batch)):
        if run["exit_code"]:
            lines.append(f"  - **{label}: run-all exited with {run['exit_code']}**: {'; '.join(run['problems'])}")
    step = big["step_seconds"].get("parquet_chunks")
    big_steps = next(iter(big["datasets"].values()), {}).get("steps", {})
    lines.append(f"  - big file: run-all = {_ratio(big['over_conversion_step'])} its conversion step ({_seconds(step)}, "
                 f"{big['conversion_step_cells_per_second'] or 0:,} cells/s); steps: {_steps(big_steps, bool(big['peak_tree_pss_bytes'])) or '–'}; "
                 f"other processes used {big['other_load_cpu_seconds']:.1f} CPU s meanwhile")
    totals = ", ".join(f"{k} {v:.1f} s" for k, v in batch["step_seconds"].items())
    lines.append(f"  - batch: steps summed over the files: {totals or '–'}; peak tree PSS growth last file / first "
                 f"{_ratio(batch['memory_growth_pss'])} (RSS {_ratio(batch['memory_growth_rss'])}); "
                 f"other processes used {batch['other_load_cpu_seconds']:.1f} CPU s meanwhile")
    lines += ["", "Per file of the batch (overhead = the process's seconds as the parent saw them minus its steps' own seconds; "
              "peaks over the whole tree while the file's steps ran, so files processed at once share them):", "",
              "| dataset | status | process | in steps | overhead | parquet_chunks | peak tree RSS | peak tree PSS |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, d in batch["datasets"].items():
        steps = sum(v["seconds"] for v in d["steps"].values())
        conversion = d["steps"].get("parquet_chunks", {}).get("seconds")
        lines.append(f"| {name} | {d['status']} | {d['process_seconds']:.2f} s | {steps:.2f} s | {_seconds(batch['overhead']['per_file'][name])} "
                     f"| {_seconds(conversion)} | {_mb(d['peak_tree_rss_bytes'])} | {_pss(d['peak_tree_pss_bytes'], bool(batch['peak_tree_pss_bytes']))} |")
    return lines


def markdown(report: dict) -> str:
    lines = [f"# Conversion benchmark ({report['kind']})", "", f"Command: `{report['command']}`", ""]
    lines += _machine(report["machine"])
    s = report["settings"]
    lines += [f"- Input: synthetic CSR float32, {s['genes']:,} genes, ~{s['nnz']:,} non-zeros per cell, top {s['top_genes']:,} genes, "
              f"chunk size {s['chunk_size']:,}, outputs {s['compression']}, run-all's interim chunks {s.get('interim_compression', s['compression'])}" if not s["input"] else f"- Input: {s['input']}", ""]
    if report["kind"] == "single":
        result = report["result"]
        cells = result["input"]["cells"]
        lines += HEADER + _rows(cells, result) + [""] + _details(cells, result) + [""] + _targets(result["targets"])
    elif report["kind"] == "batch":
        result = report["result"]
        workers = report["workers"]
        lines.insert(-1, f"- preprocess workers: {workers if workers is not None else 'its default'}")
        lines += _batch_rows(result) + [""] + _batch_details(result) + [""] + _targets(result["targets"])
    else:
        lines += HEADER
        for cells, result in report["results"].items():
            lines += _rows(int(cells), result)
        lines.append("")
        for cells, result in report["results"].items():
            lines += _details(int(cells), result)
        lines += ["", "Scaling (each size against the smallest):", "",
                  "| cells | x cells | conversion time | conversion cells/s | conversion peak RSS | run-all time | run-all peak RSS | RSS growth <= 1.2x |",
                  "|---|---:|---:|---:|---:|---:|---:|:---:|"]
        for r in report["ratios"]:
            lines.append(
                f"| {r['from_cells']:,} -> {r['to_cells']:,} | {r['cells_ratio']}x | {r['conversion_time_ratio']}x | {r['conversion_cells_per_second_ratio']}x "
                f"| {r['conversion_peak_rss_ratio']}x | {_ratio(r.get('run_all_time_ratio'))} | {_ratio(r.get('run_all_peak_rss_ratio'))} | {'yes' if r['rss_growth_target_met'] else '**no**'} |"
            )
        for cells, result in report["results"].items():
            lines += ["", f"Targets at {int(cells):,} cells:", ""] + _targets(result["targets"])
    lines += ["", f"Total benchmark time {report['seconds']} s."]
    return "\n".join(lines) + "\n"


def write(report: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    stem = out_dir / f"{report['kind']}-{stamp}"
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md_path.write_text(markdown(report))
    return json_path, md_path

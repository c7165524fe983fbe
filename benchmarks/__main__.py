"""``uv run python -m benchmarks [run|scaling|batch|profile|generate] ...``

run      one file: the conversion alone and the whole ``preprocess run-all`` (each a child process,
         peak RSS from ``wait4``, peak RSS and PSS from sampling the process tree), the naive reference on the
         first ``--naive-cells`` cells, a sample check of the output; JSON + Markdown result.
         The conversion runs with the default (random) tie-break and, alternating with it, with
         the position tie-break: the difference is what the random tie-break costs.
scaling  the same at several sizes (default 10,000 and 100,000 cells), with the ratios of time
         and peak RSS between them.
batch    many small files against one big one: ``preprocess run-all BIG --offline`` on one
         ``--big-cells`` file, then ``preprocess run-all FOLDER --batch-mode --offline`` on
         ``--files`` files of ``--cells-per-file`` cells (each its own seed), both in this run.
         Reports cells/s of each and their ratio, the step seconds from the logs, the per-file
         overhead (a dataset process's seconds in batch_summary.json minus its steps' own
         seconds; median and max), run-all over its conversion step, and the peak RSS and PSS
         of the whole process tree (PSS does not double-count pages forked children share).
profile  per-stage time of the previous and the current conversion, one thread, in sequence.
generate write a synthetic CellxGene-like h5ad file.

Synthetic inputs are made once under ``--work`` and reused (the generator is deterministic).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from benchmarks import report
from benchmarks.runner import REPO, Settings, run_batch_benchmark, run_benchmark, run_scaling

DEFAULT_OUT = REPO / "benchmarks" / "results"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--genes", type=int, default=20_000, help="genes of synthetic inputs (default 20,000)")
    parser.add_argument("--nnz", type=int, default=2000, help="mean non-zeros per cell of synthetic inputs (default 2,000)")
    parser.add_argument("--top-genes", type=int, default=2000, help="genes per sentence, 0 = all (default 2,000)")
    parser.add_argument("--chunk-size", type=int, default=10_000, help="cells per chunk (default 10,000)")
    parser.add_argument("--compression", default="zstd", help="codec of outputs, of the conversion alone and of the naive reference (default zstd)")
    parser.add_argument("--interim-compression", default="lz4", help="codec of run-all's interim chunks (default lz4, the pipeline's default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of synthetic inputs and of the sample check")
    parser.add_argument("--work", type=Path, default=Settings().work, help="folder for inputs and outputs (default: %(default)s)")


def _outputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep-outputs", action="store_true", help="keep the parquet outputs under --work")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the JSON and Markdown results (default: %(default)s)")


def _measured(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--naive-cells", type=int, default=10_000, help="cells the naive reference converts (0: skip it)")
    parser.add_argument("--check-cells", type=int, default=300, help="cells checked against a per-cell computation")
    parser.add_argument("--repeat", type=int, default=1, help="conversion runs; the fastest is reported")
    parser.add_argument("--threads", type=int, default=None, help="ranking threads of the conversion (default: up to 2)")
    parser.add_argument("--skip-run-all", action="store_true", help="measure the conversion only")
    parser.add_argument("--skip-tie-break-compare", action="store_true",
                        help="do not also convert with the position tie-break (one conversion less per repeat)")
    _outputs(parser)


def _settings(args: argparse.Namespace, cells: int) -> Settings:
    return Settings(
        cells=cells, genes=args.genes, nnz=args.nnz, top_genes=args.top_genes, chunk_size=args.chunk_size,
        compression=args.compression, interim_compression=args.interim_compression, seed=args.seed, input=getattr(args, "input", None),
        naive_cells=args.naive_cells, check_cells=args.check_cells, repeat=args.repeat,
        run_all=not args.skip_run_all, naive=args.naive_cells > 0, threads=args.threads,
        work=args.work, keep_outputs=args.keep_outputs, tie_break_compare=not args.skip_tie_break_compare,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = "uv run python -m benchmarks " + shlex.join(argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode")

    run = sub.add_parser("run", help="benchmark one file")
    run.add_argument("--cells", type=int, default=100_000, help="cells of the synthetic input (default 100,000)")
    run.add_argument("--input", type=Path, default=None, help="an existing h5ad file instead of a synthetic one")
    _measured(run)

    scaling = sub.add_parser("scaling", help="benchmark several sizes and compare")
    scaling.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000], help="sizes (default 10,000 100,000)")
    _measured(scaling)

    batch = sub.add_parser("batch", help="a batch of small files against one big file, whole run-all each")
    batch.add_argument("--files", type=int, default=20, help="small files in the batch (default 20)")
    batch.add_argument("--cells-per-file", type=int, default=5000, help="cells of each small file (default 5,000)")
    batch.add_argument("--big-cells", type=int, default=100_000, help="cells of the big file (default 100,000)")
    batch.add_argument("--workers", type=int, default=None, help="passed to preprocess as --workers N (default: not passed)")
    _common(batch)
    _outputs(batch)

    prof = sub.add_parser("profile", help="per-stage time before/after, one thread")
    prof.add_argument("--cells", type=int, default=100_000)
    prof.add_argument("--input", type=Path, default=None)
    prof.add_argument("--chunks", type=int, default=3, help="chunks to profile (default 3)")
    prof.add_argument("--out", type=Path, default=DEFAULT_OUT)
    _common(prof)

    generate = sub.add_parser("generate", help="write a synthetic h5ad file")
    generate.add_argument("path", type=Path)
    generate.add_argument("--cells", type=int, default=100_000)
    generate.add_argument("--donors", type=int, default=40)
    generate.add_argument("--h5-compression", default=None, help="HDF5 filter of the matrix: gzip, lzf (default none)")
    generate.add_argument("--genes", type=int, default=20_000)
    generate.add_argument("--nnz", type=int, default=2000)
    generate.add_argument("--seed", type=int, default=0)

    args = parser.parse_args(argv or ["--help"])
    if args.mode == "generate":
        from scrna_assets.core.synthetic import write_synthetic_h5ad

        started = time.perf_counter()
        write_synthetic_h5ad(args.path, args.cells, args.genes, args.nnz, n_donors=args.donors, seed=args.seed, compression=args.h5_compression)
        print(f"{args.path}: {args.cells:,} cells in {time.perf_counter() - started:.1f} s, {args.path.stat().st_size / 2**20:,.0f} MB")
        return 0
    if args.mode == "profile":
        from benchmarks.profile import markdown, profile
        from benchmarks.runner import input_file

        settings = Settings(cells=args.cells, genes=args.genes, nnz=args.nnz, top_genes=args.top_genes, chunk_size=args.chunk_size,
                            seed=args.seed, input=args.input, work=args.work)
        path, _ = input_file(settings, args.cells, print)
        results = profile(path, args.chunk_size, args.top_genes, args.chunks)
        text = markdown(results, command)
        print(text)
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (args.out / f"profile-{stamp}.json").write_text(json.dumps({"command": command, "input": str(path), **results}, indent=2) + "\n")
        (args.out / f"profile-{stamp}.md").write_text("# Conversion profile\n\n" + text)
        return 0
    if args.mode == "run":
        result = run_benchmark(_settings(args, args.cells), command)
    elif args.mode == "batch":
        settings = Settings(cells=args.big_cells, genes=args.genes, nnz=args.nnz, top_genes=args.top_genes, chunk_size=args.chunk_size,
                            compression=args.compression, interim_compression=args.interim_compression, seed=args.seed, naive=False,
                            work=args.work, keep_outputs=args.keep_outputs)
        result = run_batch_benchmark(settings, args.files, args.cells_per_file, args.workers, command)
    else:
        result = run_scaling(_settings(args, max(args.cells)), sorted(set(args.cells)), command)
    json_path, md_path = report.write(result, args.out)
    print()
    print(report.markdown(result))
    print(f"Results: {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

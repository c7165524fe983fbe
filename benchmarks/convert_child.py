"""Child process: run ``convert_h5ad`` once and print its own figures as JSON on stdout.

Run by the benchmark as ``python -m benchmarks.convert_child``, so the parent measures this
process's peak RSS (``wait4``) without the parent's own memory in it.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

STARTED = time.perf_counter()


def _rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("h5ad", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--top-genes", type=int, default=2000)
    parser.add_argument("--compression", default="zstd")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--writer-threads", type=int, default=None)
    parser.add_argument("--dataset", default="benchmark")
    parser.add_argument("--tie-break", default=None, help="random or position (default: convert_h5ad's)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random tie-break (default: convert_h5ad's)")
    args = parser.parse_args()

    from scrna_assets.core.convert import WRITER_THREADS, convert_h5ad

    imported = time.perf_counter()
    rss_before = _rss_bytes()
    ties = {k: v for k, v in (("tie_break", args.tie_break), ("seed", args.seed)) if v is not None}
    result = convert_h5ad(args.h5ad, args.dataset, args.out, {}, args.chunk_size, args.top_genes, args.compression, threads=args.threads,
                          writer_threads=args.writer_threads or WRITER_THREADS, **ties)
    done = time.perf_counter()
    print(json.dumps({
        "cells": result.n_cells,
        "genes": result.n_vars,
        "chunk_files": len(result.chunk_files),
        "convert_seconds": done - imported,
        "import_seconds": imported - STARTED,
        "rss_before_convert_bytes": rss_before,
        "empty_sentences": result.empty_sentences,
    }))


if __name__ == "__main__":
    main()

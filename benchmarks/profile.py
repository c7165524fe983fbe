"""Where the conversion's time goes, stage by stage, before and after the fast path.

Both pipelines run in this process, one thread, stages one after the other (no overlap), on the
first ``chunks`` chunks of a file, so each stage's share of the work is plain to see:

* ``before``: the previous implementation: ``iter_chunks`` (scipy CSR per chunk), one numpy
  ``lexsort`` of (row, -value, column) per chunk, ``take`` of the words, ``binary_join`` of a
  list array, a synchronous ``pq.write_table``;
* ``after``: ``iter_csr_parts`` (reused buffers), the compiled radix ranking with the default
  (random) tie-break (the cell keys counted in the ranking), the compiled byte copy into one
  Arrow buffer, the same ``pq.write_table``.

For the overlapped pipeline as it really runs, sample ``benchmarks.convert_child`` with py-spy.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scrna_assets.core.convert import output_column_names
from scrna_assets.core.gene_tokens import assign_gene_tokens
from scrna_assets.core.h5ad_reader import H5adSource
from scrna_assets.core.parquet_io import write_chunk_file
from scrna_assets.core.sentences import DEFAULT_SEED, DEFAULT_TIE_BREAK, SentenceBuilder, cell_tie_keys

STAGES = ("read matrix", "rank (sort + top genes)", "sentence strings", "obs columns + table", "parquet write (encode + zstd)")


class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] += now - self._last
        self._last = now

    def reset(self) -> None:
        self._last = time.perf_counter()


def _table(source: H5adSource, names: dict[str, str], start: int, stop: int, sentences: pa.Array, n_genes: np.ndarray) -> pa.Table:
    columns = {"cell_id": source.obs.index(start, stop), "dataset": pa.array(["benchmark"] * (stop - start), type=pa.string())}
    for name, array in source.obs.read(start, stop).items():
        columns[names[name]] = array
    columns["cell_sentence"] = sentences
    columns["n_genes"] = pa.array(n_genes, type=pa.int32())
    return pa.table(columns)


def profile_before(path: Path, chunk_size: int, top_genes: int, chunks: int, out: Path) -> tuple[dict[str, float], int]:
    clock = _Clock()
    cells = 0
    with H5adSource(path) as source:
        tokens = assign_gene_tokens(source.read_var(), {})
        vocabulary = pa.array(tokens.vocabulary, type=pa.string())
        names = output_column_names(source.obs.columns)
        clock.reset()
        for number, chunk in enumerate(source.iter_chunks(chunk_size)):
            if number >= chunks:
                break
            clock.lap("read matrix")
            matrix = chunk.matrix
            n_rows = matrix.shape[0]
            indptr = matrix.indptr.astype(np.int64)
            rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(indptr))
            cols = matrix.indices.astype(np.int64)
            values = matrix.data
            token = tokens.token_index[cols]
            keep = (values > 0) & (token >= 0)
            rows, cols, values, token = rows[keep], cols[keep], values[keep], token[keep]
            order = np.lexsort((cols, -values.astype(np.float64), rows))
            rows, token = rows[order], token[order]
            counts = np.bincount(rows, minlength=n_rows).astype(np.int64)
            if top_genes > 0:
                starts = np.cumsum(counts) - counts
                rank = np.arange(len(rows), dtype=np.int64) - starts[rows]
                token = token[rank < top_genes]
                counts = np.minimum(counts, top_genes)
            offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            clock.lap("rank (sort + top genes)")
            words = vocabulary.take(pa.array(token, type=pa.int32()))
            sentences = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(offsets), words), " ").cast(pa.string())
            clock.lap("sentence strings")
            table = _table(source, names, chunk.start, chunk.stop, sentences, counts.astype(np.int32))
            clock.lap("obs columns + table")
            write_chunk_file(table, out / f"before_{number:04d}.parquet", "zstd")
            clock.lap("parquet write (encode + zstd)")
            cells += n_rows
    return dict(clock.seconds), cells


def profile_after(path: Path, chunk_size: int, top_genes: int, chunks: int, out: Path) -> tuple[dict[str, float], int]:
    clock = _Clock()
    cells = 0
    with H5adSource(path) as source:
        tokens = assign_gene_tokens(source.read_var(), {})
        vocabulary = pa.array(tokens.vocabulary, type=pa.string())
        names = output_column_names(source.obs.columns)
        with SentenceBuilder(tokens.token_index, vocabulary, top_genes, threads=1, tie_break=DEFAULT_TIE_BREAK) as builder:
            clock.reset()
            for number, part in enumerate(source.iter_csr_parts(chunk_size)):
                if number >= chunks:
                    break
                clock.lap("read matrix")
                ids = source.obs.index(part.start, part.stop)
                before = dict(builder.stage_seconds)
                started = time.perf_counter()
                keys = cell_tie_keys(ids, DEFAULT_SEED, "benchmark") if DEFAULT_TIE_BREAK == "random" else None
                key_seconds = time.perf_counter() - started
                sentences, n_genes = builder.build(part.indptr, part.indices, part.data, overwrite_indices=True, cell_keys=keys)
                clock.seconds["rank (sort + top genes)"] += builder.stage_seconds["rank"] - before["rank"] + key_seconds
                clock.seconds["sentence strings"] += builder.stage_seconds["strings"] - before["strings"]
                clock.reset()
                table = _table(source, names, part.start, part.stop, sentences, n_genes)
                clock.lap("obs columns + table")
                write_chunk_file(table, out / f"after_{number:04d}.parquet", "zstd")
                clock.lap("parquet write (encode + zstd)")
                cells += part.stop - part.start
    return dict(clock.seconds), cells


def profile(path: Path, chunk_size: int = 10_000, top_genes: int = 2000, chunks: int = 2) -> dict:
    out = Path(tempfile.mkdtemp(prefix="scrna-profile-"))
    try:
        profile_after(path, chunk_size, top_genes, 1, out)  # warm up: numba cache, page cache
        results = {}
        for name, function in (("before", profile_before), ("after", profile_after)):
            seconds, cells = function(path, chunk_size, top_genes, chunks, out)
            total = sum(seconds.values())
            results[name] = {
                "cells": cells,
                "seconds": round(total, 3),
                "cells_per_second_one_thread": round(cells / total) if total else None,
                "stages": {s: {"seconds": round(seconds.get(s, 0.0), 3), "share": round(seconds.get(s, 0.0) / total, 3) if total else 0.0} for s in STAGES},
            }
        return results
    finally:
        shutil.rmtree(out, ignore_errors=True)


def markdown(results: dict, command: str) -> str:
    lines = [f"Command: `{command}` (one thread, stages in sequence, no overlap)", "",
             "| stage | before: s | before: share | after: s | after: share |", "|---|---:|---:|---:|---:|"]
    for stage in STAGES:
        b, a = results["before"]["stages"][stage], results["after"]["stages"][stage]
        lines.append(f"| {stage} | {b['seconds']:.3f} | {b['share']:.0%} | {a['seconds']:.3f} | {a['share']:.0%} |")
    b, a = results["before"], results["after"]
    lines.append(f"| **total** ({b['cells']:,} cells) | {b['seconds']:.3f} | | {a['seconds']:.3f} | |")
    lines.append(f"| cells/s on one thread | {b['cells_per_second_one_thread']:,} | | {a['cells_per_second_one_thread']:,} | |")
    return "\n".join(lines) + "\n"

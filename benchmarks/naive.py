"""The naive reference conversion: what one writes first, and what the fast path is measured against.

Densify each chunk of rows, then per cell: with the random tie-break (the default, as in the
pipeline), the expressed genes of the dense row, their tie keys (blake2b and splitmix64 with
numpy, written here from the specification) and a ``lexsort`` by (value descending, tie key);
with ``position``, a stable ``argsort`` of the dense row (ties keep var order). Then the top genes
filtered to expressed ones, and a Python ``" ".join`` of the gene names; one parquet file per
chunk, written like the pipeline's. Same token rules (``assign_gene_tokens``), so its sentences
must equal the pipeline's exactly.

Run as a child process (``python -m benchmarks.naive``) on the first ``--cells`` cells.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import warnings
from pathlib import Path

STARTED = time.perf_counter()


def _blake64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _splitmix64(x):
    """The splitmix64 finalizer of a uint64 numpy array (mod 2**64)."""
    import numpy as np

    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def naive_convert(path: Path, out: Path, dataset: str, n_cells: int | None, chunk_size: int, top_genes: int, compression: str,
                  tie_break: str = "random", seed: int = 42) -> int:
    import anndata
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from scrna_assets.core.gene_tokens import assign_gene_tokens

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = anndata.read_h5ad(path, backed="r")
    tokens = assign_gene_tokens(adata.var, {})
    names = [tokens.vocabulary[t] if t >= 0 else None for t in tokens.token_index]
    untokened = tokens.token_index < 0
    gene_keys = np.array([_blake64(name) if name is not None else 0 for name in names], dtype=np.uint64)  # per var row
    total = adata.n_obs if n_cells is None else min(n_cells, adata.n_obs)
    out.mkdir(parents=True, exist_ok=True)
    for number, start in enumerate(range(0, total, chunk_size)):
        stop = min(start + chunk_size, total)
        dense = adata.X[start:stop].toarray()  # densify the chunk
        dense[:, untokened] = 0
        obs = adata.obs.iloc[start:stop]
        sentences, counts = [], []
        for row, cell_id in zip(dense, obs.index.astype(str)):
            if tie_break == "random":
                expressed = np.flatnonzero(row > 0)
                ties = _splitmix64(gene_keys[expressed] ^ np.uint64(_blake64(f"{seed}\x1f{dataset}\x1f{cell_id}")))
                order = expressed[np.lexsort((ties, -row[expressed]))]  # value descending, then tie key
            else:
                order = np.argsort(-row, kind="stable")  # value descending, ties in var order
            if top_genes > 0:
                order = order[:top_genes]
            genes = [names[j] for j in order if row[j] > 0]
            sentences.append(" ".join(genes))
            counts.append(len(genes))
        columns = {"cell_id": pa.array(obs.index.astype(str)), "dataset": pa.array([dataset] * (stop - start))}
        for name in obs.columns:
            columns[name] = pa.array(obs[name].astype(str))
        columns["cell_sentence"] = pa.array(sentences, type=pa.string())
        columns["n_genes"] = pa.array(counts, type=pa.int32())
        pq.write_table(pa.table(columns), out / f"chunk_{number:04d}.parquet", compression=compression)
    adata.file.close()
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("h5ad", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--cells", type=int, default=None)
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--top-genes", type=int, default=2000)
    parser.add_argument("--compression", default="zstd")
    parser.add_argument("--dataset", default="benchmark")
    parser.add_argument("--tie-break", default="random")
    parser.add_argument("--seed", type=int, default=42, help="seed of the random tie-break")
    args = parser.parse_args()
    import scrna_assets.core.gene_tokens  # noqa: F401  (imports are not part of the timing)

    imported = time.perf_counter()
    cells = naive_convert(args.h5ad, args.out, args.dataset, args.cells, args.chunk_size, args.top_genes, args.compression,
                          args.tie_break, args.seed)
    print(json.dumps({"cells": cells, "convert_seconds": time.perf_counter() - imported, "import_seconds": imported - STARTED}))


if __name__ == "__main__":
    main()

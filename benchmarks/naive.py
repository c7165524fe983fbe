"""The naive reference conversion: what one writes first, and what the fast path is measured against.

Densify each chunk of rows, then per cell a stable ``argsort`` of the dense row (ties keep var
order, as the contract says), the top genes filtered to expressed ones, and a Python
``" ".join`` of the gene names; one parquet file per chunk, written like the pipeline's. Same
token rules (``assign_gene_tokens``), so its sentences must equal the pipeline's exactly.

Run as a child process (``python -m benchmarks.naive``) on the first ``--cells`` cells.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

STARTED = time.perf_counter()


def naive_convert(path: Path, out: Path, dataset: str, n_cells: int | None, chunk_size: int, top_genes: int, compression: str) -> int:
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
    total = adata.n_obs if n_cells is None else min(n_cells, adata.n_obs)
    out.mkdir(parents=True, exist_ok=True)
    for number, start in enumerate(range(0, total, chunk_size)):
        stop = min(start + chunk_size, total)
        dense = adata.X[start:stop].toarray()  # densify the chunk
        dense[:, untokened] = 0
        sentences, counts = [], []
        for row in dense:
            order = np.argsort(-row, kind="stable")  # value descending, ties in var order
            if top_genes > 0:
                order = order[:top_genes]
            genes = [names[j] for j in order if row[j] > 0]
            sentences.append(" ".join(genes))
            counts.append(len(genes))
        obs = adata.obs.iloc[start:stop]
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
    args = parser.parse_args()
    import scrna_assets.core.gene_tokens  # noqa: F401  (imports are not part of the timing)

    imported = time.perf_counter()
    cells = naive_convert(args.h5ad, args.out, args.dataset, args.cells, args.chunk_size, args.top_genes, args.compression)
    print(json.dumps({"cells": cells, "convert_seconds": time.perf_counter() - imported, "import_seconds": imported - STARTED}))


if __name__ == "__main__":
    main()

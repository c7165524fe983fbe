"""CellxGene-like h5ad files of any size, written chunk by chunk so memory stays flat.

Used by the benchmark and by tests that need files larger than the example: CSR float32
counts, Ensembl ids with ``feature_name``, ``development_stage`` and ``donor_id``.

Each cell draws its genes from one heavy-tailed (Pareto) gene popularity without replacement
(what ``rng.choice(replace=False, p=...)`` does, but with an alias table and a compiled loop), so
100,000 cells x 20,000 genes x 2,000 non-zeros take seconds, not minutes. The same seed gives the
same file.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from scrna_assets.core.sentences import _compiled

_STR = h5py.string_dtype("utf-8")


def _dict_group(parent: h5py.Group, name: str) -> None:
    group = parent.create_group(name)
    group.attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})


def _strings(group: h5py.Group, name: str, values: list[str]) -> None:
    data = group.create_dataset(name, data=np.array(values, dtype=object), dtype=_STR)
    data.attrs.update({"encoding-type": "string-array", "encoding-version": "0.2.0"})


def _categorical(group: h5py.Group, name: str, codes: np.ndarray, categories: list[str]) -> None:
    column = group.create_group(name)
    column.attrs.update({"encoding-type": "categorical", "encoding-version": "0.2.0", "ordered": False})
    column.create_dataset("codes", data=codes.astype(np.int32))
    _strings(column, "categories", categories)


def _dataframe(group: h5py.Group, columns: list[str]) -> None:
    group.attrs.update({
        "encoding-type": "dataframe", "encoding-version": "0.2.0", "_index": "_index",
        "column-order": np.array(columns, dtype=object),
    })


def _alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias table: draw ``i`` uniformly, keep it with probability ``prob[i]``, else
    take ``alias[i]``; that draws ``i`` with probability ``weights[i] / weights.sum()``."""
    n = len(weights)
    scaled = weights * (n / weights.sum())
    prob = np.ones(n)
    alias = np.arange(n, dtype=np.int64)
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if scaled[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        prob[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        (small if scaled[g] < 1.0 else large).append(g)
    return prob.astype(np.float32), alias.astype(np.int32)


@_compiled
def _sample_cells(seed, prob, alias, counts, indptr, out_indices, out_values):  # pragma: no cover - compiled
    """``counts[r]`` distinct genes for each cell r, ascending, into ``out_indices[indptr[r]:]``,
    and their counts (geometric, p = 0.3: mostly small integers, many ties) into ``out_values``.

    Sequential weighted sampling without replacement: weighted draws with replacement, a gene
    already in the cell drawn again is skipped. ``mark`` (cell stamp per gene) avoids clearing."""
    np.random.seed(seed)
    n_genes = len(prob)
    mark = np.full(n_genes, -1, np.int32)
    for r in range(len(counts)):
        got = 0
        while got < counts[r]:
            u = np.random.random() * n_genes  # one draw: the integer part picks the column,
            i = min(int(u), n_genes - 1)  # the fraction decides between it and its alias
            gene = i if u - i < prob[i] else alias[i]
            if mark[gene] != r:
                mark[gene] = r
                got += 1
        p = indptr[r]
        for gene in range(n_genes):  # the marked genes, in column order
            if mark[gene] == r:
                out_indices[p] = gene
                out_values[p] = np.random.geometric(0.3)
                p += 1


def write_synthetic_h5ad(
    path: Path,
    n_cells: int,
    n_genes: int = 20_000,
    nnz_per_cell: int = 2000,
    n_donors: int = 40,
    seed: int = 0,
    chunk_cells: int = 10_000,
    compression: str | None = None,
) -> Path:
    """Write the file in blocks of rows; returns ``path``.

    Cells have between ``nnz_per_cell`` / 2 and 3 / 2 x ``nnz_per_cell`` genes (uniformly), with
    geometric counts (many ties, as in real data). ``compression`` ("gzip", "lzf" or None) is the
    HDF5 filter of the matrix datasets; CellxGene files often use gzip."""
    rng = np.random.default_rng(seed)
    nnz_per_cell = min(nnz_per_cell, n_genes)
    partial = path.with_name(path.name + ".tmp")
    counts = rng.integers(nnz_per_cell // 2, nnz_per_cell * 3 // 2 + 1, size=n_cells).clip(0, n_genes)
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    total = int(indptr[-1])
    prob, alias = _alias_table(rng.pareto(1.5, size=n_genes) + 0.01)
    block_cells = max(1, chunk_cells)
    storage = {"chunks": (min(1 << 18, total),), **({"compression": compression} if compression else {})} if total else {}
    with h5py.File(partial, "w") as f:
        f.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        x = f.create_group("X")
        x.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (n_cells, n_genes)})
        data = x.create_dataset("data", shape=(total,), dtype=np.float32, **storage)
        indices = x.create_dataset("indices", shape=(total,), dtype=np.int32, **storage)
        for start in range(0, n_cells, block_cells):
            stop = min(start + block_cells, n_cells)
            lo, hi = int(indptr[start]), int(indptr[stop])
            block_indices = np.empty(hi - lo, dtype=np.int32)
            block_values = np.empty(hi - lo, dtype=np.float32)
            seed_of_block = int(rng.integers(0, 2**32 - 1))
            _sample_cells(seed_of_block, prob, alias, counts[start:stop], indptr[start : stop + 1] - lo, block_indices, block_values)
            indices[lo:hi] = block_indices
            data[lo:hi] = block_values
        x.create_dataset("indptr", data=indptr)

        donors = rng.integers(0, n_donors, size=n_cells)
        donor_ages = rng.integers(18, 95, size=n_donors)
        obs = f.create_group("obs")
        _dataframe(obs, ["donor_id", "development_stage", "tissue"])
        index = obs.create_dataset("_index", shape=(n_cells,), dtype=_STR)
        index.attrs.update({"encoding-type": "string-array", "encoding-version": "0.2.0"})
        for start in range(0, n_cells, chunk_cells):
            stop = min(start + chunk_cells, n_cells)
            index[start:stop] = np.array([f"cell_{i:09d}" for i in range(start, stop)], dtype=object)
        _categorical(obs, "donor_id", donors, [f"donor_{d:04d}" for d in range(n_donors)])
        stages = sorted({f"{a}-year-old stage" for a in donor_ages})
        stage_code = np.array([stages.index(f"{a}-year-old stage") for a in donor_ages])
        _categorical(obs, "development_stage", stage_code[donors], stages)
        _categorical(obs, "tissue", rng.integers(0, 3, size=n_cells), ["blood", "lung", "liver"])

        var = f.create_group("var")
        _dataframe(var, ["feature_name"])
        _strings(var, "_index", [f"ENSG{80000000000 + j:011d}" for j in range(n_genes)])
        _categorical(var, "feature_name", np.arange(n_genes), [f"GENE{j:05d}" for j in range(n_genes)])
        for name in ("uns", "obsm", "varm", "obsp", "varp", "layers"):
            _dict_group(f, name)
    partial.replace(path)
    return path

"""CellxGene-like h5ad files of any size, written chunk by chunk so memory stays flat.

Used by the benchmark and by tests that need files larger than the example: CSR float32
counts, Ensembl ids with ``feature_name``, ``development_stage`` and ``donor_id``.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

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


def write_synthetic_h5ad(
    path: Path,
    n_cells: int,
    n_genes: int = 20_000,
    nnz_per_cell: int = 2000,
    n_donors: int = 40,
    seed: int = 0,
    chunk_cells: int = 10_000,
) -> Path:
    """Write the file in ``chunk_cells`` blocks of rows; returns ``path``."""
    rng = np.random.default_rng(seed)
    nnz_per_cell = min(nnz_per_cell, n_genes)
    partial = path.with_name(path.name + ".tmp")
    with h5py.File(partial, "w") as f:
        f.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        x = f.create_group("X")
        x.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (n_cells, n_genes)})
        data = x.create_dataset("data", shape=(0,), maxshape=(None,), dtype=np.float32, chunks=(1 << 18,))
        indices = x.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1 << 18,))
        indptr = np.zeros(n_cells + 1, dtype=np.int64)
        weights = rng.pareto(1.5, size=n_genes) + 0.01
        weights /= weights.sum()
        for start in range(0, n_cells, chunk_cells):
            rows = min(chunk_cells, n_cells - start)
            counts = rng.integers(nnz_per_cell // 2, nnz_per_cell * 3 // 2 + 1, size=rows).clip(0, n_genes)
            cols = [np.sort(rng.choice(n_genes, size=k, replace=False, p=weights)) for k in counts]
            block_indices = np.concatenate(cols).astype(np.int32) if cols else np.empty(0, np.int32)
            block_data = rng.geometric(0.3, size=block_indices.size).astype(np.float32)
            offset = data.shape[0]
            data.resize((offset + block_data.size,))
            indices.resize((offset + block_indices.size,))
            data[offset:] = block_data
            indices[offset:] = block_indices
            indptr[start + 1 : start + rows + 1] = offset + np.cumsum(counts)
        x.create_dataset("indptr", data=indptr)

        donors = rng.integers(0, n_donors, size=n_cells)
        donor_ages = rng.integers(18, 95, size=n_donors)
        obs = f.create_group("obs")
        _dataframe(obs, ["donor_id", "development_stage", "tissue"])
        _strings(obs, "_index", [f"cell_{i:09d}" for i in range(n_cells)])
        _categorical(obs, "donor_id", donors, [f"donor_{d:04d}" for d in range(n_donors)])
        stages = sorted({f"{a}-year-old stage" for a in donor_ages})
        stage_code = {s: i for i, s in enumerate(stages)}
        _categorical(obs, "development_stage", np.array([stage_code[f"{donor_ages[d]}-year-old stage"] for d in donors]), stages)
        _categorical(obs, "tissue", rng.integers(0, 3, size=n_cells), ["blood", "lung", "liver"])

        var = f.create_group("var")
        _dataframe(var, ["feature_name"])
        _strings(var, "_index", [f"ENSG{80000000000 + j:011d}" for j in range(n_genes)])
        _categorical(var, "feature_name", np.arange(n_genes), [f"GENE{j:05d}" for j in range(n_genes)])
        for name in ("uns", "obsm", "varm", "obsp", "varp", "layers"):
            _dict_group(f, name)
    partial.replace(path)
    return path

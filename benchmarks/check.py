"""Check output sentences of sampled cells against a straightforward per-cell computation.

For each sampled cell, the row is read straight from the h5ad (h5py), the expressed tokened
genes are sorted in plain Python by (value descending, tie key, var position) with the random
tie-break (the tie key computed here from its specification with Python integers) or by (value
descending, var position) with ``position``, cut to ``top_genes`` and joined; the output row with
that ``cell_id`` must have exactly that sentence and ``n_genes``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scrna_assets.core.gene_tokens import assign_gene_tokens
from scrna_assets.core.h5ad_reader import H5adSource


MASK64 = 2**64 - 1


def blake64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def tie_key(cell_key: int, gene_key: int) -> int:
    """splitmix64 finalizer of (cell key XOR gene key)."""
    z = ((cell_key ^ gene_key) + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def expected_sentences(
    h5ad: Path, rows: np.ndarray, top_genes: int, tie_break: str = "random", tie_seed: int = 42, dataset: str = "benchmark"
) -> dict[str, tuple[str, int]]:
    """cell_id -> (sentence, n_genes) for the given CSR rows, computed cell by cell; ``tie_seed``
    and ``dataset``: those of the conversion (random tie-break only)."""
    with H5adSource(h5ad) as source:
        if source.encoding != "csr":
            raise ValueError("the check reads CSR files (the synthetic ones are)")
        tokens = assign_gene_tokens(source.read_var(), {})
        node = source.matrix_node
        indptr, indices, data = node["indptr"], node["indices"], node["data"]
        index = source.obs.group[source.obs.index_name]
        ids = [v.decode() if isinstance(v, bytes) else str(v) for v in index[rows].tolist()] if len(rows) else []
        gene_keys: dict[int, int] = {}
        expected = {}
        for row, cell_id in zip(rows.tolist(), ids):
            lo, hi = int(indptr[row]), int(indptr[row + 1])
            cell_key = blake64(f"{tie_seed}\x1f{dataset}\x1f{cell_id}")
            genes = []
            for col, value in zip(indices[lo:hi].tolist(), data[lo:hi].tolist()):
                token = int(tokens.token_index[col])
                if value > 0 and token >= 0:
                    if tie_break == "random":
                        if token not in gene_keys:
                            gene_keys[token] = blake64(tokens.vocabulary[token])
                        genes.append((-float(value), tie_key(cell_key, gene_keys[token]), int(col)))
                    else:
                        genes.append((-float(value), 0, int(col)))
            genes.sort()
            if top_genes > 0:
                genes = genes[:top_genes]
            words = [tokens.vocabulary[tokens.token_index[col]] for _, _, col in genes]
            expected[cell_id] = (" ".join(words), len(words))
    return expected


def sample_rows(n_cells: int, n_sample: int, seed: int = 0) -> np.ndarray:
    """The first and last cell and a seeded uniform sample in between, ascending."""
    if n_cells == 0:
        return np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    picked = rng.choice(n_cells, size=min(n_sample, n_cells), replace=False)
    return np.unique(np.concatenate([[0, n_cells - 1], picked]))


def output_rows(files: list[Path], cell_ids: list[str]) -> dict[str, tuple[str, int]]:
    """cell_id -> (cell_sentence, n_genes) found in the parquet files."""
    wanted = pa.array(cell_ids, type=pa.string())
    found: dict[str, tuple[str, int]] = {}
    for path in files:
        ids = pq.read_table(path, columns=["cell_id"]).column("cell_id")
        mask = pc.is_in(ids, value_set=wanted)
        if not pc.any(mask).as_py():
            continue
        table = pq.read_table(path, columns=["cell_id", "cell_sentence", "n_genes"]).filter(mask)
        for cell, sentence, count in zip(*(table.column(c).to_pylist() for c in ("cell_id", "cell_sentence", "n_genes"))):
            found[cell] = (sentence, count)
    return found


def check_output(
    h5ad: Path,
    files: list[Path],
    top_genes: int,
    n_sample: int = 300,
    seed: int = 0,
    require_all: bool = True,
    tie_break: str = "random",
    tie_seed: int = 42,
    dataset: str = "benchmark",
) -> dict:
    """Compare sampled cells (``seed``: of the sample); with ``require_all`` False, cells absent
    from the output (e.g. left out of the split for lack of an age) are skipped rather than
    counted as mismatches. ``tie_break``, ``tie_seed``, ``dataset``: those of the conversion."""
    with H5adSource(h5ad) as source:
        n_cells, encoding = source.n_obs, source.encoding
    if encoding != "csr":
        return {"ok": None, "skipped": f"the check reads CSR rows; this matrix is {encoding}"}
    expected = expected_sentences(h5ad, sample_rows(n_cells, n_sample, seed), top_genes, tie_break, tie_seed, dataset)
    found = output_rows(files, list(expected))
    mismatches, missing = [], []
    for cell, want in expected.items():
        if cell not in found:
            missing.append(cell)
        elif found[cell] != want:
            mismatches.append(cell)
    ok = not mismatches and (not missing or not require_all)
    return {
        "ok": ok,
        "checked": len(expected) - len(missing),
        "missing": len(missing),
        "mismatches": len(mismatches),
        "first_mismatches": mismatches[:5],
    }

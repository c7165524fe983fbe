"""Tests for ``scrna_assets.core.sentences``: CSR rows -> ranked gene sentences."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from scrna_assets.core.sentences import build_sentences

VOCAB = pa.array(["G0", "G1", "G2", "G3"], type=pa.string())
# var position -> vocabulary position; var 2 and var 5 have no token. Not monotonic on purpose,
# so "ties by var position" differs from "ties by vocabulary position" (vars 1 and 3).
TOKEN_INDEX = np.array([0, 2, -1, 1, 3, -1], dtype=np.int32)


def hand_matrix() -> sp.csr_matrix:
    """Rows built by hand, with stored zeros, ties, unsorted indices, untokened genes."""
    rows: list[list[tuple[int, float]]] = [
        [(4, 1.0), (0, 3.0), (3, 2.0)],  # unsorted indices -> vars 0, 3, 4
        [(1, 5.0), (0, 5.0), (4, 5.0), (3, 0.0)],  # three-way tie + stored zero -> var order 0,1,4
        [(2, 9.0), (5, 8.0)],  # only untokened genes -> empty
        [],  # no stored entries -> empty
        [(0, 0.0), (1, 0.0)],  # only stored zeros -> empty
        [(5, 100.0), (1, 2.5), (2, 50.0), (0, -1.0), (3, 2.5)],  # negatives excluded, tie: var 1 first
    ]
    data, indices, indptr = [], [], [0]
    for row in rows:
        for col, value in row:
            indices.append(col)
            data.append(value)
        indptr.append(len(indices))
    return sp.csr_matrix(
        (np.array(data, dtype=np.float32), np.array(indices, dtype=np.int32), np.array(indptr)),
        shape=(len(rows), len(TOKEN_INDEX)),
    )


@pytest.mark.parametrize(
    ("top_genes", "sentences", "n_genes"),
    [
        (0, ["G0 G1 G3", "G0 G2 G3", "", "", "", "G2 G1"], [3, 3, 0, 0, 0, 2]),
        (1, ["G0", "G0", "", "", "", "G2"], [1, 1, 0, 0, 0, 1]),
        (2, ["G0 G1", "G0 G2", "", "", "", "G2 G1"], [2, 2, 0, 0, 0, 2]),
        (10, ["G0 G1 G3", "G0 G2 G3", "", "", "", "G2 G1"], [3, 3, 0, 0, 0, 2]),
    ],
)
def test_hand_built_rows(top_genes: int, sentences: list[str], n_genes: list[int]) -> None:
    """Exact sentences and counts for every edge case at top_genes 0 (all), 1, 2 and > row size."""
    matrix = hand_matrix()
    assert not matrix.has_sorted_indices  # the fixture really has unsorted rows
    got, counts = build_sentences(matrix, TOKEN_INDEX, VOCAB, top_genes)
    assert got.type == pa.string()
    assert got.null_count == 0  # empty rows are "" not null
    assert got.to_pylist() == sentences
    assert counts.dtype == np.int32
    assert counts.tolist() == n_genes


def test_integer_counts_matrix() -> None:
    """Integer (raw count) matrices rank the same way as floats."""
    matrix = sp.csr_matrix(np.array([[0, 3, 3, 7, 0, 1]], dtype=np.int32))
    got, counts = build_sentences(matrix, TOKEN_INDEX, VOCAB, 0)
    assert got.to_pylist() == ["G1 G2"]
    assert counts.tolist() == [2]


def test_zero_rows() -> None:
    """A chunk with no cells gives empty outputs, not an error."""
    matrix = sp.csr_matrix((0, len(TOKEN_INDEX)), dtype=np.float32)
    got, counts = build_sentences(matrix, TOKEN_INDEX, VOCAB, 0)
    assert got.to_pylist() == []
    assert counts.dtype == np.int32 and counts.tolist() == []


def reference_sentences(
    matrix: sp.csr_matrix, token_index: np.ndarray, vocabulary: list[str], top_genes: int
) -> tuple[list[str], list[int]]:
    """Straightforward per-cell reference of the contract."""
    sentences, counts = [], []
    for row in range(matrix.shape[0]):
        start, stop = matrix.indptr[row], matrix.indptr[row + 1]
        genes = [
            (float(value), int(col))
            for col, value in zip(matrix.indices[start:stop], matrix.data[start:stop])
            if value > 0 and token_index[col] >= 0
        ]
        genes.sort(key=lambda g: (-g[0], g[1]))
        if top_genes > 0:
            genes = genes[:top_genes]
        sentences.append(" ".join(vocabulary[token_index[col]] for _, col in genes))
        counts.append(len(genes))
    return sentences, counts


@pytest.mark.parametrize("top_genes", [0, 1, 2, 5, 40])
def test_matches_reference_on_random_matrix(top_genes: int) -> None:
    """Vectorised implementation equals the per-cell reference (ties, zeros, negatives, shuffled)."""
    rng = np.random.default_rng(12345)
    n_rows, n_cols = 150, 60
    dense = rng.integers(-1, 6, size=(n_rows, n_cols)).astype(np.float32)  # many ties, some negatives
    dense[rng.random((n_rows, n_cols)) < 0.6] = 0
    dense[5] = 0  # one fully empty cell
    matrix = sp.csr_matrix(dense)
    # add stored zeros and shuffle the column order within each row
    indices, data = [], []
    for row in range(n_rows):
        cols = list(matrix.indices[matrix.indptr[row] : matrix.indptr[row + 1]])
        vals = list(matrix.data[matrix.indptr[row] : matrix.indptr[row + 1]])
        zero_cols = [c for c in range(n_cols) if dense[row, c] == 0][:3]
        cols += zero_cols
        vals += [0.0] * len(zero_cols)
        order = rng.permutation(len(cols))
        indices.append(np.array(cols, dtype=np.int32)[order])
        data.append(np.array(vals, dtype=np.float32)[order])
    indptr = np.concatenate([[0], np.cumsum([len(i) for i in indices])])
    matrix = sp.csr_matrix((np.concatenate(data), np.concatenate(indices), indptr), shape=(n_rows, n_cols))
    token_index = np.arange(n_cols, dtype=np.int32)
    token_index[rng.random(n_cols) < 0.2] = -1
    kept = token_index >= 0
    token_index[kept] = rng.permutation(int(kept.sum())).astype(np.int32)  # vocabulary order != var order
    vocabulary = [f"GENE{i}" for i in range(int(kept.sum()))]

    got, counts = build_sentences(matrix, token_index, pa.array(vocabulary, type=pa.string()), top_genes)
    want, want_counts = reference_sentences(matrix, token_index, vocabulary, top_genes)
    assert got.to_pylist() == want
    assert counts.tolist() == want_counts
    assert counts.dtype == np.int32
    assert got.to_pylist()[5] == ""


@pytest.mark.parametrize("buffers", [1, 2])
def test_reused_buffers_never_overwrite_sentences_still_held(buffers: int) -> None:
    """Sentence buffers are reused only once nothing references them: results kept alive across
    many builds (more than the buffers kept) stay intact, and dropped ones free their buffer."""
    import gc

    from scrna_assets.core.sentences import SentenceBuilder

    matrix = hand_matrix()
    want = ["G0 G1 G3", "G0 G2 G3", "", "", "", "G2 G1"]
    with SentenceBuilder(TOKEN_INDEX, VOCAB, 0, buffers=buffers) as builder:
        held = [builder.build_csr(matrix)[0] for _ in range(buffers + 3)]
        for _ in range(4):  # dropped results: their buffers are taken again
            builder.build_csr(matrix)
            gc.collect()
        fresh = builder.build_csr(matrix)[0]
        assert all(sentences.to_pylist() == want for sentences in held)
        assert fresh.to_pylist() == want
        pool = builder._buffers
        assert len(pool._slabs) <= buffers
    assert fresh.to_pylist() == want  # still readable after the builder is closed
    table = pa.table({"s": fresh})
    del fresh
    assert table.column("s").to_pylist() == want


def test_load_compiled_runs_both_loops() -> None:
    """The background head start loads both loops for int32 and int64 indices (checked in a fresh
    process, where nothing else has called them; its errors are swallowed, so only the loaded
    signatures show it worked) and changes no result."""
    import subprocess
    import sys

    probe = (
        "import numpy as np\n"
        "from scrna_assets.core.sentences import _rank_rows, _write_bytes, load_compiled\n"
        "for dtype in (np.int32, np.int64, np.uint16):\n"
        "    load_compiled(dtype).join(timeout=300)\n"
        "print(sorted(str(sig[1]) for sig in _rank_rows.signatures))\n"
        "print(sorted(str(sig[1]) for sig in _write_bytes.signatures))\n"
    )
    lines = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert lines == ["['array(int32, 1d, C)', 'array(int64, 1d, C)']"] * 2
    got, counts = build_sentences(hand_matrix(), TOKEN_INDEX, VOCAB, 0)
    assert got.to_pylist() == ["G0 G1 G3", "G0 G2 G3", "", "", "", "G2 G1"]

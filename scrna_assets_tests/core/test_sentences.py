"""Tests for ``scrna_assets.core.sentences``: CSR rows -> ranked gene sentences."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from scrna_assets.core import sentences as sentences_module
from scrna_assets.core.sentences import (
    TIE_BREAKS,
    SentenceBuilder,
    _build_sentences_numpy,
    build_sentences,
    cell_tie_keys,
    gene_tie_keys,
    tie_keys,
)

VOCAB = pa.array(["G0", "G1", "G2", "G3"], type=pa.string())
# var position -> vocabulary position; var 2 and var 5 have no token. Not monotonic on purpose,
# so "ties by var position" differs from "ties by vocabulary position" (vars 1 and 3).
TOKEN_INDEX = np.array([0, 2, -1, 1, 3, -1], dtype=np.int32)
HAND_CELLS = [f"c{i}" for i in range(6)]


# -- the random tie-break, written out from its specification with Python integers ----------------
def blake64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def splitmix64(x: int) -> int:
    mask = 2**64 - 1
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def spec_cell_key(seed: int, dataset: str, cell_id: str | None) -> int:
    return blake64(f"{seed}\x1f{dataset}\x1f{'' if cell_id is None else cell_id}")


def spec_tie_key(seed: int, dataset: str, cell_id: str | None, token: str) -> int:
    return splitmix64(spec_cell_key(seed, dataset, cell_id) ^ blake64(token))


def spec_order(
    genes: list[tuple[float, int, str]], tie_break: str, seed: int = 42, dataset: str = "ds", cell_id: str | None = None
) -> list[str]:
    """(value, var position, token) of a cell's expressed genes -> its tokens in sentence order."""
    if tie_break == "position":
        return [token for _, _, token in sorted(genes, key=lambda g: (-g[0], g[1]))]
    return [token for _, _, token in sorted(genes, key=lambda g: (-g[0], spec_tie_key(seed, dataset, cell_id, g[2]), g[1]))]


def keys_of(cell_ids: list[str], seed: int = 42, dataset: str = "ds") -> np.ndarray:
    return cell_tie_keys(pa.array(cell_ids, type=pa.string()), seed, dataset)


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
    """Exact sentences and counts for every edge case at top_genes 0 (all), 1, 2 and > row size:
    the ``position`` tie-break (the order before the random tie-break existed)."""
    matrix = hand_matrix()
    assert not matrix.has_sorted_indices  # the fixture really has unsorted rows
    got, counts = build_sentences(matrix, TOKEN_INDEX, VOCAB, top_genes, tie_break="position")
    assert got.type == pa.string()
    assert got.null_count == 0  # empty rows are "" not null
    assert got.to_pylist() == sentences
    assert counts.dtype == np.int32
    assert counts.tolist() == n_genes


@pytest.mark.parametrize(
    ("top_genes", "sentences", "n_genes"),
    [
        (0, ["G0 G1 G3", "G0 G3 G2", "", "", "", "G1 G2"], [3, 3, 0, 0, 0, 2]),
        (1, ["G0", "G0", "", "", "", "G1"], [1, 1, 0, 0, 0, 1]),
        (2, ["G0 G1", "G0 G3", "", "", "", "G1 G2"], [2, 2, 0, 0, 0, 2]),
    ],
)
def test_hand_built_rows_random(top_genes: int, sentences: list[str], n_genes: list[int]) -> None:
    """The same rows with the random tie-break (seed 42, dataset "ds", cells c0..c5): pinned, and
    equal to the order computed from the hash specification in plain Python."""
    got, counts = build_sentences(hand_matrix(), TOKEN_INDEX, VOCAB, top_genes, cell_keys=keys_of(HAND_CELLS))
    assert got.to_pylist() == sentences and counts.tolist() == n_genes
    # row 1: G0, G2, G3 tie at 5.0; row 5: G2 (var 1) and G1 (var 3) tie at 2.5
    row1 = spec_order([(5.0, 0, "G0"), (5.0, 1, "G2"), (5.0, 4, "G3")], "random", cell_id="c1")
    row5 = spec_order([(2.5, 1, "G2"), (2.5, 3, "G1")], "random", cell_id="c5")
    cut = top_genes or 3
    assert sentences[1] == " ".join(row1[:cut]) and sentences[5] == " ".join(row5[:cut])


def test_hash_specification_exact() -> None:
    """Cell, gene and tie keys equal the specification (blake2b-64 little-endian, splitmix64 of the
    XOR), computed here with Python integers; a few values pinned."""
    ids = ["cell_000000001", "AAACCTG-1", "", "βγ-基因"]
    got = cell_tie_keys(pa.array(ids), 7, "my_dataset")
    assert got.dtype == np.uint64
    assert got.tolist() == [spec_cell_key(7, "my_dataset", i) for i in ids]
    tokens = ["CD3E", "MT-CO1", "β2M", ""]
    genes = gene_tie_keys(pa.array(tokens))
    assert genes.tolist() == [blake64(t) for t in tokens]
    ties = tie_keys(np.repeat(got[:1], 4), genes)
    assert ties.tolist() == [spec_tie_key(7, "my_dataset", ids[0], t) for t in tokens]
    # pinned: the seed, dataset, id and token all matter
    assert spec_cell_key(42, "ds", "c0") == keys_of(["c0"])[0] == 0x892359340144C7C9
    assert blake64("G0") == gene_tie_keys(["G0"])[0] == 0xEB9FBE45742D6D66
    assert spec_tie_key(42, "ds", "c0", "G0") == tie_keys(keys_of(["c0"]), gene_tie_keys(["G0"]))[0] == 0xD77D02A190AFC34D
    assert splitmix64(0) == 0xE220A8397B1DCDAF  # the finalizer's well-known value at 0


def test_cell_keys_of_nulls_and_non_string_ids() -> None:
    """A null id hashes like the empty string; a non-string id like its ``str``; a chunked array
    or a list give the same keys as an array."""
    assert keys_of(["x", None, ""]).tolist() == [spec_cell_key(42, "ds", "x")] + [spec_cell_key(42, "ds", "")] * 2
    assert cell_tie_keys(pa.array([12, None]), 42, "ds").tolist() == [spec_cell_key(42, "ds", "12"), spec_cell_key(42, "ds", "")]
    assert cell_tie_keys(pa.chunked_array([["a"], ["b"]]), 42, "ds").tolist() == keys_of(["a", "b"]).tolist()
    assert cell_tie_keys(["a", "b"], 42, "ds").tolist() == keys_of(["a", "b"]).tolist()
    assert cell_tie_keys(pa.array([], pa.string()), 42, "ds").tolist() == []


def test_integer_counts_matrix() -> None:
    """Integer (raw count) matrices rank the same way as floats."""
    matrix = sp.csr_matrix(np.array([[0, 3, 3, 7, 0, 1]], dtype=np.int32))
    got, counts = build_sentences(matrix, TOKEN_INDEX, VOCAB, 0, tie_break="position")
    assert got.to_pylist() == ["G1 G2"]
    assert counts.tolist() == [2]
    got, _ = build_sentences(matrix, TOKEN_INDEX, VOCAB, 0, cell_keys=keys_of(["c0"]))
    assert got.to_pylist() == ["G1 G2"]  # no tie among tokened genes: the same
    matrix = sp.csr_matrix(np.array([[0, 3, 5, 3, 3, 1]], dtype=np.int64))
    got, _ = build_sentences(matrix, TOKEN_INDEX, VOCAB, 0, cell_keys=keys_of(["c0"]))
    assert got.to_pylist() == [" ".join(spec_order([(3, 1, "G2"), (3, 3, "G1"), (3, 4, "G3")], "random", cell_id="c0"))] == ["G3 G2 G1"]


@pytest.mark.parametrize("tie_break", TIE_BREAKS)
def test_zero_rows(tie_break: str) -> None:
    """A chunk with no cells gives empty outputs, not an error."""
    matrix = sp.csr_matrix((0, len(TOKEN_INDEX)), dtype=np.float32)
    got, counts = build_sentences(matrix, TOKEN_INDEX, VOCAB, 0, tie_break=tie_break, cell_keys=keys_of([]))
    assert got.to_pylist() == []
    assert counts.dtype == np.int32 and counts.tolist() == []


def test_tie_break_arguments_checked() -> None:
    """An unknown tie-break, the random one without cell keys, or cell keys of the wrong length
    are refused; ``position`` ignores cell keys."""
    with pytest.raises(ValueError, match="tie_break must be one of random, position"):
        SentenceBuilder(TOKEN_INDEX, VOCAB, 0, tie_break="shuffle")
    with pytest.raises(ValueError, match="needs the cell_keys"):
        build_sentences(hand_matrix(), TOKEN_INDEX, VOCAB, 0)
    with pytest.raises(ValueError, match="5 cell_keys for 6 rows"):
        build_sentences(hand_matrix(), TOKEN_INDEX, VOCAB, 0, cell_keys=keys_of(HAND_CELLS[:5]))
    got, _ = build_sentences(hand_matrix(), TOKEN_INDEX, VOCAB, 0, tie_break="position", cell_keys=keys_of(HAND_CELLS))
    assert got.to_pylist() == ["G0 G1 G3", "G0 G2 G3", "", "", "", "G2 G1"]


def reference_sentences(
    matrix: sp.csr_matrix,
    token_index: np.ndarray,
    vocabulary: list[str],
    top_genes: int,
    tie_break: str = "position",
    cell_ids: list[str] | None = None,
    seed: int = 42,
    dataset: str = "ds",
) -> tuple[list[str], list[int]]:
    """Straightforward per-cell reference of the contract."""
    sentences, counts = [], []
    for row in range(matrix.shape[0]):
        start, stop = matrix.indptr[row], matrix.indptr[row + 1]
        genes = [
            (float(value), int(col), vocabulary[token_index[col]])
            for col, value in zip(matrix.indices[start:stop], matrix.data[start:stop])
            if value > 0 and token_index[col] >= 0
        ]
        words = spec_order(genes, tie_break, seed, dataset, cell_ids[row] if cell_ids else None)
        if top_genes > 0:
            words = words[:top_genes]
        sentences.append(" ".join(words))
        counts.append(len(words))
    return sentences, counts


def random_matrix(rng: np.random.Generator, n_rows: int = 150, n_cols: int = 60) -> tuple[sp.csr_matrix, np.ndarray, list[str]]:
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
    return matrix, token_index, vocabulary


@pytest.mark.parametrize("tie_break", TIE_BREAKS)
@pytest.mark.parametrize("top_genes", [0, 1, 2, 5, 40])
def test_matches_reference_on_random_matrix(top_genes: int, tie_break: str) -> None:
    """Vectorised implementation equals the per-cell reference (ties, zeros, negatives, shuffled)."""
    rng = np.random.default_rng(12345)
    matrix, token_index, vocabulary = random_matrix(rng)
    cells = [f"cell-{i}" for i in range(matrix.shape[0])]
    got, counts = build_sentences(matrix, token_index, pa.array(vocabulary, type=pa.string()), top_genes, tie_break, keys_of(cells))
    want, want_counts = reference_sentences(matrix, token_index, vocabulary, top_genes, tie_break, cells)
    assert got.to_pylist() == want
    assert counts.tolist() == want_counts
    assert counts.dtype == np.int32
    assert got.to_pylist()[5] == ""


def test_random_differs_from_position_and_depends_on_seed_dataset_and_cell() -> None:
    """The random order is not var order, and changes with the seed, the dataset name and the
    cell id (and not otherwise)."""
    rng = np.random.default_rng(12345)
    matrix, token_index, vocabulary = random_matrix(rng)
    vocab = pa.array(vocabulary)
    cells = [f"cell-{i}" for i in range(matrix.shape[0])]

    def sentences(seed: int = 42, dataset: str = "ds", ids: list[str] = cells) -> list[str]:
        return build_sentences(matrix, token_index, vocab, 0, cell_keys=keys_of(ids, seed, dataset))[0].to_pylist()

    base = sentences()
    position = build_sentences(matrix, token_index, vocab, 0, tie_break="position")[0].to_pylist()
    assert [sorted(s.split()) for s in base] == [sorted(s.split()) for s in position]  # same words
    for other in (position, sentences(seed=43), sentences(dataset="ds2"), sentences(ids=cells[1:] + cells[:1])):
        changed = sum(a != b for a, b in zip(base, other))
        assert 100 < changed < len(base), changed
    assert sentences() == base


def test_two_tied_genes_in_either_order_about_half_the_time() -> None:
    """2,000 cells where genes A and B tie (among other genes, some tied too): A comes first in
    about half of them; the count is a pure function of the seed, so it is pinned."""
    rng = np.random.default_rng(4)
    n_cells, n_genes = 2000, 12
    dense = rng.integers(1, 4, size=(n_cells, n_genes)).astype(np.float32)
    dense[:, 1] = dense[:, 0]  # A (var 0) and B (var 1) tie in every cell
    vocabulary = ["A", "B"] + [f"X{i}" for i in range(n_genes - 2)]
    cells = [f"cell_{i:06d}" for i in range(n_cells)]
    got, _ = build_sentences(sp.csr_matrix(dense), np.arange(n_genes, dtype=np.int32), pa.array(vocabulary), 0, cell_keys=keys_of(cells))
    a_first = sum(s.split().index("A") < s.split().index("B") for s in got.to_pylist())
    assert a_first == sum(spec_tie_key(42, "ds", c, "A") < spec_tie_key(42, "ds", c, "B") for c in cells)
    assert a_first == 1023
    assert 0.45 * n_cells < a_first < 0.55 * n_cells
    # and position order always puts A first
    position, _ = build_sentences(sp.csr_matrix(dense), np.arange(n_genes, dtype=np.int32), pa.array(vocabulary), 0, tie_break="position")
    assert all(s.split().index("A") < s.split().index("B") for s in position.to_pylist())


@pytest.mark.parametrize("top_genes", [1, 3, 5])
def test_top_genes_cut_inside_a_tie_group(top_genes: int) -> None:
    """The cut comes after the ordering: within the group at the cut, the genes with the smallest
    tie keys are kept (not the first ones in var order)."""
    names = ["H", "T0", "T1", "T2", "T3", "T4", "T5", "L"]
    values = np.array([[9, 2, 2, 2, 2, 2, 2, 1]], dtype=np.float32)
    got, counts = build_sentences(sp.csr_matrix(values), np.arange(8, dtype=np.int32), pa.array(names), top_genes, cell_keys=keys_of(["cut"]))
    tied = sorted(names[1:7], key=lambda t: spec_tie_key(42, "ds", "cut", t))
    assert got.to_pylist() == [" ".join((["H"] + tied)[:top_genes])]
    assert counts.tolist() == [top_genes]
    assert tied[:2] != names[1:3]  # the kept ones are not simply the first in var order


def test_chunks_threads_and_var_order_do_not_change_a_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cell's random sentence is the same whether it is built in one chunk or row by row, on one
    thread or three, and whatever the var order (columns permuted with their tokens)."""
    rng = np.random.default_rng(21)
    dense = rng.integers(0, 4, size=(300, 80)).astype(np.float32)
    dense[rng.random(dense.shape) < 0.3] = 0
    names = [f"G{i}" for i in range(80)]
    cells = [f"cell{i}" for i in range(300)]
    keys = keys_of(cells)
    matrix = sp.csr_matrix(dense)
    whole, _ = build_sentences(matrix, np.arange(80, dtype=np.int32), pa.array(names), 25, cell_keys=keys)
    want = reference_sentences(matrix, np.arange(80, dtype=np.int32), names, 25, "random", cells)[0]
    assert whole.to_pylist() == want
    with SentenceBuilder(np.arange(80, dtype=np.int32), pa.array(names), 25) as builder:
        for size in (1, 7, 128):
            pieces = []
            for start in range(0, 300, size):
                sentences, _ = builder.build_csr(matrix[start : start + size], keys[start : start + size])
                pieces += sentences.to_pylist()
            assert pieces == want, size
    monkeypatch.setattr(sentences_module, "_PARALLEL_MIN_NNZ", 1)
    with SentenceBuilder(np.arange(80, dtype=np.int32), pa.array(names), 25, threads=3) as builder:
        assert builder._row_ranges(matrix.indptr.astype(np.int64), 300) != [(0, 300)]
        assert builder.build_csr(matrix, keys)[0].to_pylist() == want
    perm = rng.permutation(80)
    permuted = sp.csr_matrix(dense[:, perm])
    token_index = np.arange(80, dtype=np.int32)[perm]  # var j of the permuted file is var perm[j]
    assert build_sentences(permuted, token_index, pa.array(names), 25, cell_keys=keys)[0].to_pylist() == want
    assert build_sentences(permuted, token_index, pa.array(names), 25, tie_break="position")[0].to_pylist() != (
        build_sentences(matrix, np.arange(80, dtype=np.int32), pa.array(names), 25, tie_break="position")[0].to_pylist()
    )


def test_tie_keys_sharing_their_high_half() -> None:
    """Two tokens whose tie keys (in cell "c0", seed 42, dataset "ds") agree on the high 32 bits:
    0x17480e46546d7307 (T6644) > 0x17480e4637ade1bb (T268071). The full key decides, whatever
    the var order, the value path (one counting pass, several, numpy) and the group size."""
    assert spec_tie_key(42, "ds", "c0", "T6644") == 0x17480E46546D7307
    assert spec_tie_key(42, "ds", "c0", "T268071") == 0x17480E4637ADE1BB
    filler = [f"F{i}" for i in range(40)]
    for names in (["T6644", "T268071"], ["T268071", "T6644"]):
        vocabulary = names + filler
        token_index = np.arange(len(vocabulary), dtype=np.int32)
        for n_tied in (0, 3, 30):  # others in the tie group: insertion sort alone, or bucket pass first
            for other in (np.float32(2.0), np.float32(1.0 + 2**-20), np.float64(0.1)):  # one pass, several, numpy
                values = np.zeros((1, len(vocabulary)), dtype=type(other))
                values[0, :2] = 1
                values[0, 2 : 2 + n_tied] = 1
                values[0, 2 + n_tied :] = other
                matrix = sp.csr_matrix(values)
                got = build_sentences(matrix, token_index, pa.array(vocabulary), 0, cell_keys=keys_of(["c0"]))[0].to_pylist()[0].split()
                assert got.index("T268071") < got.index("T6644"), (names, n_tied, other)
                want = reference_sentences(matrix, token_index, vocabulary, 0, "random", ["c0"])[0]
                assert got == want[0].split()


def test_equal_tie_keys_fall_back_to_var_position() -> None:
    """Two var rows with the same token (a token_index that is not one-to-one) have equal tie keys:
    var position decides, on both paths, and duplicate entries keep their stored order."""
    vocabulary = pa.array(["A", "B", "C"])
    token_index = np.array([0, 1, 0, 2, 0], dtype=np.int32)
    for dtype in (np.float32, np.float64):
        values = np.array([[1, 1, 1, 1, 1], [2, 1, 2, 1, 0.1]], dtype=dtype)
        got = build_sentences(sp.csr_matrix(values), token_index, vocabulary, 0, cell_keys=keys_of(["x", "y"]))[0].to_pylist()
        rows = [[(float(v), j, "ABC"[token_index[j]]) for j, v in enumerate(row) if v > 0] for row in values]
        assert got == [" ".join(spec_order(r, "random", cell_id=c)) for r, c in zip(rows, ["x", "y"])]


@pytest.mark.parametrize("buffers", [1, 2])
def test_reused_buffers_never_overwrite_sentences_still_held(buffers: int) -> None:
    """Sentence buffers are reused only once nothing references them: results kept alive across
    many builds (more than the buffers kept) stay intact, and dropped ones free their buffer."""
    import gc

    matrix = hand_matrix()
    want = ["G0 G1 G3", "G0 G2 G3", "", "", "", "G2 G1"]
    with SentenceBuilder(TOKEN_INDEX, VOCAB, 0, buffers=buffers, tie_break="position") as builder:
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


def test_numpy_path_orders_ties_like_the_compiled_one() -> None:
    """The numpy path (any dtype) gives the compiled path's random order exactly."""
    rng = np.random.default_rng(77)
    matrix, token_index, vocabulary = random_matrix(rng, 200, 50)
    keys = keys_of([f"n{i}" for i in range(200)])
    vocab = pa.array(vocabulary)
    for top_genes in (0, 3):
        with SentenceBuilder(token_index, vocab, top_genes) as builder:
            fast, fast_counts = builder.build_csr(matrix, keys)
            slow, slow_counts = _build_sentences_numpy(matrix, token_index, vocab, top_genes, keys, builder.gene_keys)
        assert fast.equals(slow) and np.array_equal(fast_counts, slow_counts)
        assert _build_sentences_numpy(matrix, token_index, vocab, top_genes, keys)[0].equals(fast)  # gene keys made on the way


def test_load_compiled_runs_both_loops() -> None:
    """The background head start loads the ranking loop of the tie-break asked for (only that
    one) and the string loop, for int32 and int64 indices (checked in a fresh process, where
    nothing else has called them; its errors are swallowed, so only the loaded signatures show
    it worked) and changes no result."""
    import subprocess
    import sys

    probe = (
        "import numpy as np\n"
        "from scrna_assets.core.sentences import _rank_rows, _rank_rows_random, _write_bytes, load_compiled\n"
        "for dtype in (np.int32, np.int64, np.uint16):\n"
        "    load_compiled(dtype).join(timeout=300)\n"
        "print(sorted(str(sig[1]) for sig in _rank_rows_random.signatures))\n"
        "print(sorted(str(sig[1]) for sig in _write_bytes.signatures))\n"
        "print(sorted(str(sig[1]) for sig in _rank_rows.signatures))\n"
        "load_compiled(np.int32, 'position').join(timeout=300)\n"
        "print(sorted(str(sig[1]) for sig in _rank_rows.signatures))\n"
    )
    lines = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert lines == ["['array(int32, 1d, C)', 'array(int64, 1d, C)']"] * 2 + ["[]", "['array(int32, 1d, C)']"]
    got, counts = build_sentences(hand_matrix(), TOKEN_INDEX, VOCAB, 0, tie_break="position")
    assert got.to_pylist() == ["G0 G1 G3", "G0 G2 G3", "", "", "", "G2 G1"]

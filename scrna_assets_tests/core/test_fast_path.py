"""The fast conversion path: compiled ranking and string building, reused read buffers,
background parquet writing. It must give exactly what the data contract (and the previous,
vectorised numpy implementation) gives, byte for byte, for every input and thread count, with
either tie-break (``position``: the order of the previous implementation; ``random``: the numpy
path's lexsort with the tie key)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from scrna_assets.core import sentences as sentences_module
from scrna_assets.core.convert import convert_h5ad, output_column_names
from scrna_assets.core.errors import InputError
from scrna_assets.core.gene_tokens import assign_gene_tokens
from scrna_assets.core.h5ad_reader import H5adSource
from scrna_assets.core.parquet_io import ChunkWriter
from scrna_assets.core.sentences import (
    TIE_BREAKS,
    SentenceBuilder,
    _build_sentences_numpy,
    _value_keys,
    build_sentences,
    cell_tie_keys,
)
from scrna_assets.core.synthetic import write_synthetic_h5ad
from scrna_assets_tests.core import h5ad_factory as factory
from scrna_assets_tests.core.test_sentences import spec_tie_key


def cell_ids(n: int) -> list[str]:
    return [f"cell_{i:06d}" for i in range(n)]


def keys_for(n: int) -> np.ndarray:
    return cell_tie_keys(pa.array(cell_ids(n)), 42, "ds")


# -- a per-cell reference of the contract --------------------------------------------------------
def reference(
    matrix: sp.csr_matrix, token_index: np.ndarray, vocabulary: list[str], top_genes: int, tie_break: str = "position", first_cell: int = 0
) -> tuple[list[str], list[int]]:
    """Sentences cell by cell; with ``random``, row r is cell ``cell_ids()[first_cell + r]`` (seed
    42, dataset "ds") and ties go by tie key (computed from the specification, Python integers)."""
    sentences, counts = [], []
    for row in range(matrix.shape[0]):
        lo, hi = matrix.indptr[row], matrix.indptr[row + 1]
        cell = f"cell_{first_cell + row:06d}"
        values: dict[int, float] = {}  # a column stored twice is one gene with the sum (as scipy reads it)
        for col, value in zip(matrix.indices[lo:hi].tolist(), matrix.data[lo:hi].tolist()):
            values[col] = values.get(col, 0) + value
        genes = [
            (-float(value), spec_tie_key(42, "ds", cell, vocabulary[token_index[col]]) if tie_break == "random" else 0, int(col))
            for col, value in values.items()
            if value > 0 and token_index[col] >= 0
        ]
        genes.sort()
        if top_genes > 0:
            genes = genes[:top_genes]
        sentences.append(" ".join(vocabulary[token_index[col]] for _, _, col in genes))
        counts.append(len(genes))
    return sentences, counts


def shuffled_csr(dense: np.ndarray, rng: np.random.Generator, stored_zeros: int = 2, shuffle: bool = True) -> sp.csr_matrix:
    """CSR of ``dense`` with some stored zeros and (optionally) unsorted column order in rows."""
    indices, data, indptr = [], [], [0]
    for row in dense:
        cols = list(np.flatnonzero(row))
        zero_cols = [c for c in np.flatnonzero(row == 0)[:stored_zeros]]
        cols_all = np.array(cols + zero_cols, dtype=np.int64)
        vals = np.concatenate([row[cols], np.zeros(len(zero_cols), dtype=dense.dtype)])
        order = rng.permutation(len(cols_all)) if shuffle else np.argsort(cols_all, kind="stable")
        indices.append(cols_all[order])
        data.append(vals[order])
        indptr.append(indptr[-1] + len(cols_all))
    return sp.csr_matrix(
        (np.concatenate(data).astype(dense.dtype), np.concatenate(indices).astype(np.int32), np.array(indptr)),
        shape=dense.shape,
    )


def random_tokens(n_cols: int, rng: np.random.Generator, drop: float = 0.2) -> tuple[np.ndarray, list[str]]:
    """A token index with untokened vars and a vocabulary order unlike var order; words of
    1 to 40 bytes including multi-byte UTF-8, around the 16-byte copy slot."""
    token_index = np.arange(n_cols, dtype=np.int32)
    token_index[rng.random(n_cols) < drop] = -1
    kept = token_index >= 0
    token_index[kept] = rng.permutation(int(kept.sum())).astype(np.int32)
    lengths = [1, 2, 9, 14, 15, 16, 17, 31, 40]
    vocabulary = []
    for i in range(int(kept.sum())):
        stem = f"g{i}" + "x" * lengths[i % len(lengths)]
        vocabulary.append(stem if i % 7 else f"β{i}-基因")
    return token_index, vocabulary


def assert_same(matrix: sp.csr_matrix, token_index: np.ndarray, vocabulary: list[str], top_genes: int, threads: int = 1) -> None:
    """Both tie-breaks: the compiled path equals the reference and the numpy path."""
    vocab = pa.array(vocabulary, type=pa.string())
    keys = keys_for(matrix.shape[0])
    for tie_break in TIE_BREAKS:
        want, want_counts = reference(matrix, token_index, vocabulary, top_genes, tie_break)
        with SentenceBuilder(token_index, vocab, top_genes, threads=threads, tie_break=tie_break) as builder:
            got, counts = builder.build_csr(matrix, keys)
            numpy_keys = (keys, builder.gene_keys) if tie_break == "random" else ()
        assert got.type == pa.string() and got.null_count == 0
        assert got.to_pylist() == want, tie_break
        assert counts.dtype == np.int32 and counts.tolist() == want_counts
        old, old_counts = _build_sentences_numpy(matrix, token_index, vocab, top_genes, *numpy_keys)
        assert got.equals(old) and np.array_equal(counts, old_counts)


# -- ranking and strings: exact against the reference -------------------------------------------
@pytest.mark.parametrize("top_genes", [0, 1, 3, 17, 1000])
@pytest.mark.parametrize("shuffle", [False, True])
def test_random_counts_with_ties_zeros_and_unsorted_rows(top_genes: int, shuffle: bool) -> None:
    rng = np.random.default_rng(top_genes + 100 * shuffle)
    dense = rng.integers(0, 6, size=(120, 70)).astype(np.float32)
    dense[rng.random(dense.shape) < 0.5] = 0
    dense[3] = 0
    dense[7] = 4.0  # one value for a whole row: no sorting pass
    dense[8] = 0
    dense[8, 5] = 2.0  # a single gene
    token_index, vocabulary = random_tokens(70, rng)
    assert_same(shuffled_csr(dense, rng, shuffle=shuffle), token_index, vocabulary, top_genes)


@pytest.mark.parametrize(
    "make",
    [
        lambda rng, shape: (rng.lognormal(0, 3, shape)).astype(np.float32),  # every exponent, all bits vary
        lambda rng, shape: (1 + rng.integers(0, 4, shape) * np.finfo(np.float32).eps).astype(np.float32),  # last-bit ties
        lambda rng, shape: rng.integers(0, 2**32 - 1, shape, dtype=np.uint64).astype(np.uint32),
        lambda rng, shape: rng.integers(0, 2**31, shape, dtype=np.int64),
        lambda rng, shape: rng.integers(-3, 9, shape).astype(np.int16),
        lambda rng, shape: rng.integers(0, 2, shape).astype(bool),
        lambda rng, shape: rng.integers(0, 300, shape).astype(np.float16),
        lambda rng, shape: rng.integers(0, 50, shape).astype(np.float64),  # exact in float32: fast path
        lambda rng, shape: rng.random(shape) * 1e-3,  # float64 needing 53 bits: numpy path
        lambda rng, shape: rng.integers(2**40, 2**40 + 5, shape, dtype=np.int64),  # > 32 bits: numpy path
    ],
    ids=["lognormal-f32", "ulp-ties", "uint32-full-range", "int64-31bit", "int16-negatives", "bool", "f16", "f64-exact", "f64-fine", "int64-huge"],
)
@pytest.mark.parametrize("top_genes", [0, 5])
def test_value_kinds(make, top_genes: int) -> None:
    """Wide ranges (several radix passes), last-bit differences, every integer width, and the
    dtypes that fall back to the numpy path: all exact."""
    rng = np.random.default_rng(7)
    dense = make(rng, (60, 50))
    dense[rng.random(dense.shape) < 0.4] = 0
    token_index, vocabulary = random_tokens(50, rng)
    assert_same(shuffled_csr(dense, rng), token_index, vocabulary, top_genes)


def test_special_floats() -> None:
    """NaN and negative values (and -0.0) are never expressed; +inf ranks first, ties by var."""
    data = np.array([np.nan, 1.0, -0.0, np.inf, -np.inf, 2.0, np.inf, -1.0, 1e-45], dtype=np.float32)
    matrix = sp.csr_matrix((data, np.arange(9, dtype=np.int32), np.array([0, 9])), shape=(1, 9))
    vocabulary = [f"G{i}" for i in range(9)]
    token_index = np.arange(9, dtype=np.int32)
    assert_same(matrix, token_index, vocabulary, 0)
    got, counts = build_sentences(matrix, token_index, pa.array(vocabulary), 0, tie_break="position")
    assert got.to_pylist() == ["G3 G6 G5 G1 G8"] and counts.tolist() == [5]
    got, counts = build_sentences(matrix, token_index, pa.array(vocabulary), 0, cell_keys=keys_for(1))
    assert got.to_pylist() == ["G3 G6 G5 G1 G8"] and counts.tolist() == [5]  # the two +inf by tie key:
    assert spec_tie_key(42, "ds", "cell_000000", "G3") < spec_tie_key(42, "ds", "cell_000000", "G6")


@pytest.mark.parametrize("top_genes", [0, 2])
def test_duplicate_entries_are_summed(top_genes: int) -> None:
    """A CSR row with a repeated column (valid, not canonical) is one gene with the sum of its
    values, as scipy reads it; sorted or unsorted, on both paths and tie-breaks."""
    data = np.array([3, 3, 5, 3], dtype=np.float32)
    indices = np.array([2, 2, 0, 1], dtype=np.int32)
    matrix = sp.csr_matrix((data, indices, np.array([0, 4])), shape=(1, 3))
    want = ["C A B"[: 3 if top_genes else 5]]
    for tie_break in TIE_BREAKS:
        got, counts = build_sentences(matrix, np.arange(3, dtype=np.int32), pa.array(["A", "B", "C"]), top_genes, tie_break, keys_for(1))
        assert got.to_pylist() == want and counts.tolist() == [top_genes or 3]
    assert_same(matrix, np.arange(3, dtype=np.int32), ["A", "B", "C"], top_genes)
    rng = np.random.default_rng(12)
    dense = rng.integers(0, 6, size=(80, 40)).astype(np.float32)
    dense[rng.random(dense.shape) < 0.5] = 0
    token_index, vocabulary = random_tokens(40, rng)
    for shuffle in (False, True):
        split = shuffled_csr(dense, rng, shuffle=shuffle).tocoo()
        # every third entry stored as two parts (and some rows with a third, zero part)
        part = np.arange(split.nnz) % 3 == 0
        first = np.where(part, np.floor(split.data / 2), split.data).astype(np.float32)
        rows = np.concatenate([split.row, split.row[part], split.row[part][::5]])
        cols = np.concatenate([split.col, split.col[part], split.col[part][::5]])
        vals = np.concatenate([first, (split.data - first)[part], np.zeros(len(split.row[part][::5]), np.float32)])
        order = np.argsort(rows, kind="stable") if shuffle else np.lexsort((cols, rows))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=80))])
        doubled = sp.csr_matrix((vals[order], cols[order].astype(np.int32), indptr), shape=dense.shape)
        assert not doubled.has_canonical_format
        np.testing.assert_array_equal(doubled.toarray(), dense)
        want = reference(sp.csr_matrix(dense), token_index, vocabulary, 7)
        assert reference(doubled, token_index, vocabulary, 7) == want
        assert_same(doubled, token_index, vocabulary, 7)
        assert_same(doubled, token_index, vocabulary, 0)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_give_identical_output(monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    """Row ranges on several threads write disjoint bytes: identical to one thread."""
    monkeypatch.setattr(sentences_module, "_PARALLEL_MIN_NNZ", 1)
    rng = np.random.default_rng(3)
    dense = rng.integers(0, 30, size=(257, 90)).astype(np.float32)
    dense[rng.random(dense.shape) < 0.6] = 0
    token_index, vocabulary = random_tokens(90, rng)
    assert_same(shuffled_csr(dense, rng, shuffle=False), token_index, vocabulary, 12, threads=threads)


def test_row_slice_of_a_larger_matrix_and_overwrite() -> None:
    """``indptr`` may point into the middle of indices/data; ``overwrite_indices`` reuses the
    caller's indices as scratch and gives the same sentences."""
    rng = np.random.default_rng(5)
    dense = rng.integers(0, 9, size=(40, 30)).astype(np.float32)
    dense[rng.random(dense.shape) < 0.5] = 0
    matrix = sp.csr_matrix(dense)
    token_index, vocabulary = random_tokens(30, rng)
    vocab = pa.array(vocabulary)
    keys = keys_for(40)
    for tie_break in TIE_BREAKS:
        want, want_counts = reference(matrix[10:25], token_index, vocabulary, 4, tie_break, first_cell=10)
        with SentenceBuilder(token_index, vocab, 4, tie_break=tie_break) as builder:
            got, counts = builder.build(matrix.indptr[10:26], matrix.indices, matrix.data, cell_keys=keys[10:25])
            assert got.to_pylist() == want and counts.tolist() == want_counts
            indices = matrix.indices.copy()
            got, counts = builder.build(matrix.indptr, indices, matrix.data, overwrite_indices=True, cell_keys=keys)
        assert got.to_pylist() == reference(matrix, token_index, vocabulary, 4, tie_break)[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_reused_buffers_longer_than_the_chunk(monkeypatch: pytest.MonkeyPatch, dtype: type) -> None:
    """Read buffers hold stale entries past ``indptr[-1]`` (garbage, even NaN or huge values):
    they are ignored, and do not push the chunk off the fast path."""
    rng = np.random.default_rng(8)
    dense = rng.integers(0, 7, size=(30, 25)).astype(dtype)
    matrix = sp.csr_matrix(dense)
    n = matrix.nnz
    big = np.finfo(dtype).max if dtype is not np.int64 else 2**40
    garbage = np.array([np.nan if dtype is not np.int64 else 7, big, -5], dtype=dtype)
    data = np.concatenate([matrix.data, garbage])
    indices = np.concatenate([matrix.indices, np.array([0, 1, 2], dtype=matrix.indices.dtype)])
    token_index, vocabulary = random_tokens(25, rng)

    def no_fallback(*args):
        raise AssertionError("the numpy path was taken")

    monkeypatch.setattr(sentences_module, "_build_sentences_numpy", no_fallback)
    for tie_break in TIE_BREAKS:
        with SentenceBuilder(token_index, pa.array(vocabulary), 6, tie_break=tie_break) as builder:
            got, counts = builder.build(matrix.indptr, indices.copy(), data, overwrite_indices=True, cell_keys=keys_for(30))
        want, want_counts = reference(matrix, token_index, vocabulary, 6, tie_break)
        assert got.to_pylist() == want and counts.tolist() == want_counts
    assert n == matrix.nnz


def test_vocabulary_forms_and_no_tokens() -> None:
    """A large_string or sliced vocabulary works; no token at all gives empty sentences."""
    matrix = sp.csr_matrix(np.array([[1, 2, 0], [0, 0, 3]], dtype=np.float32))
    token_index = np.array([0, 1, 2], dtype=np.int32)
    for vocab in (pa.array(["A", "B", "C"], pa.large_string()), pa.array(["x", "A", "B", "C"]).slice(1)):
        for tie_break in TIE_BREAKS:
            got, counts = build_sentences(matrix, token_index, vocab, 0, tie_break, keys_for(2))
            assert got.to_pylist() == ["B A", "C"] and got.type == pa.string()
    for tie_break in TIE_BREAKS:
        got, counts = build_sentences(matrix, np.full(3, -1, np.int32), pa.array([], pa.string()), 0, tie_break, keys_for(2))
        assert got.to_pylist() == ["", ""] and counts.tolist() == [0, 0]


def test_value_keys_choice() -> None:
    """Which dtypes take the 32-bit key (fast path) and which the numpy path."""
    assert _value_keys(np.array([1.5], np.float32)) is not None
    assert _value_keys(np.array([1.5, np.nan], np.float64)) is not None
    assert _value_keys(np.array([0.1], np.float64)) is None
    assert _value_keys(np.array([1e300], np.float64)) is None
    assert _value_keys(np.array([2**32 - 1], np.uint64)) is not None
    assert _value_keys(np.array([2**32], np.int64)) is None


def test_kernels_compile_without_a_writable_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """With nowhere to cache (read-only install and home), the kernels still compile and run."""
    from numba.core import caching

    implementation = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # renamed in numba 0.60
    monkeypatch.setattr(implementation, "_locator_classes", [])
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)

    def double(values):
        return values * 2

    import numba

    with pytest.raises(RuntimeError, match="no locator"):
        numba.njit(cache=True)(double)
    compiled = sentences_module._compiled(double)
    assert compiled(np.arange(3)).tolist() == [0, 2, 4]


# -- reading ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", factory.MATRIX_FORMATS)
@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_csr_parts_equal_chunks(tmp_path: Path, fmt: str, chunk_size: int) -> None:
    """``iter_csr_parts`` (reused buffers for CSR) gives the rows ``iter_chunks`` gives."""
    path = factory.write_random(tmp_path / "in.h5ad", fmt, n_obs=23, n_vars=11, seed=4)
    with H5adSource(path) as source:
        want = [(c.start, c.stop, c.matrix.toarray()) for c in source.iter_chunks(chunk_size)]
        got = []
        for part in source.iter_csr_parts(chunk_size):
            n = int(part.indptr[-1])
            matrix = sp.csr_matrix((part.data[:n].copy(), part.indices[:n].copy(), part.indptr.copy()), shape=(part.stop - part.start, 11))
            got.append((part.start, part.stop, matrix.toarray()))
    assert [(a, b) for a, b, _ in got] == [(a, b) for a, b, _ in want]
    for (_, _, g), (_, _, w) in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("kind", ["nan", "inf", "negative"])
def test_csr_parts_refuse_bad_values(tmp_path: Path, kind: str) -> None:
    path = factory.write_bad_values(tmp_path / "bad.h5ad", kind, "csr")
    with H5adSource(path) as source, pytest.raises(InputError, match="non-finite" if kind != "negative" else "negative"):
        list(source.iter_csr_parts(3))


def test_big_endian_matrix(tmp_path: Path) -> None:
    """Big-endian data and indices (legal HDF5) are read in native order and convert the same."""
    path = factory.write_counts(tmp_path / "in.h5ad", "csr")
    with h5py.File(path, "r+") as f:
        for name, dtype in (("data", ">f4"), ("indices", ">i4")):
            values = f["X"][name][:]
            del f["X"][name]
            f["X"].create_dataset(name, data=values.astype(dtype))
    little = factory.write_counts(tmp_path / "little.h5ad", "csr")
    sentences = {}
    for tie_break in TIE_BREAKS:
        tables = [
            pa.concat_tables([pq.read_table(p) for p in convert_h5ad(f, "ds", tmp_path / f"out-{tie_break}-{f.stem}", factory.HGNC_MAP, 3, 0,
                                                                     "zstd", tie_break=tie_break).chunk_files])
            for f in (path, little)
        ]
        assert tables[0].equals(tables[1])
        sentences[tie_break] = tables[0].column("cell_sentence").to_pylist()
    assert sentences["position"] == factory.SENTENCES
    assert sentences["random"] != factory.SENTENCES  # random: not var order
    matrix = sp.csr_matrix(factory.COUNTS)
    big_endian = sp.csr_matrix((matrix.data.astype(">f4"), matrix.indices.astype(">i4"), matrix.indptr), shape=matrix.shape)
    got, _ = build_sentences(big_endian, np.arange(5, dtype=np.int32), pa.array(factory.TOKENS), 0, tie_break="position")
    assert got.to_pylist() == factory.SENTENCES
    keys = cell_tie_keys(pa.array(factory.CELL_IDS), 42, "ds")
    got, _ = build_sentences(big_endian, np.arange(5, dtype=np.int32), pa.array(factory.TOKENS), 0, cell_keys=keys)
    assert got.to_pylist() == sentences["random"]


# -- conversion: byte-identical files ---------------------------------------------------------------
def previous_conversion(path: Path, out: Path, chunk_size: int, top_genes: int, tie_break: str = "position", seed: int = 42) -> list[Path]:
    """The previous implementation, kept as the reference for bytes: scipy chunks, the numpy
    sentences (``random``: lexsort with the tie key), a synchronous ``pq.write_table`` of each chunk."""
    files = []
    with H5adSource(path) as source:
        tokens = assign_gene_tokens(source.read_var(), {})
        vocabulary = pa.array(tokens.vocabulary, type=pa.string())
        names = output_column_names(source.obs.columns)
        out.mkdir(parents=True)
        for number, chunk in enumerate(source.iter_chunks(chunk_size)):
            ids = source.obs.index(chunk.start, chunk.stop)
            keys = (cell_tie_keys(ids, seed, "ds"),) if tie_break == "random" else ()
            sentences, n_genes = _build_sentences_numpy(chunk.matrix, tokens.token_index, vocabulary, top_genes, *keys)
            columns = {"cell_id": ids,
                       "dataset": pa.array(["ds"] * (chunk.stop - chunk.start), type=pa.string())}
            for name, array in source.obs.read(chunk.start, chunk.stop).items():
                columns[names[name]] = array
            columns["organism"] = pa.nulls(chunk.stop - chunk.start, pa.string())  # neither obs nor uns names one
            columns["cell_sentence"] = sentences
            columns["n_genes"] = pa.array(n_genes, type=pa.int32())
            files.append(out / f"chunk_{number:04d}.parquet")
            pq.write_table(pa.table(columns).combine_chunks(), files[-1], compression="zstd", write_page_index=True)
    return files


def digests(files: list[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]


@pytest.fixture(scope="module")
def synthetic_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_h5ad(tmp_path_factory.mktemp("syn") / "syn.h5ad", 2_500, 400, 60, seed=11, chunk_cells=700)


@pytest.mark.parametrize("tie_break", TIE_BREAKS)
@pytest.mark.parametrize(("chunk_size", "top_genes", "threads"), [(1000, 40, 1), (1000, 40, 2), (333, 0, 2), (5000, 7, 1)])
def test_files_byte_identical_to_previous_implementation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic_file: Path,
                                                         chunk_size: int, top_genes: int, threads: int, tie_break: str) -> None:
    """``position``: byte for byte the files of the implementation before the tie-break option;
    ``random``: those of the numpy lexsort with the tie key."""
    monkeypatch.setattr(sentences_module, "_PARALLEL_MIN_NNZ", 1)
    result = convert_h5ad(synthetic_file, "ds", tmp_path / "fast", {}, chunk_size, top_genes, "zstd", threads=threads, tie_break=tie_break)
    want = previous_conversion(synthetic_file, tmp_path / "previous", chunk_size, top_genes, tie_break)
    assert [p.name for p in result.chunk_files] == [p.name for p in want]
    assert digests(result.chunk_files) == digests(want)


def test_random_sentences_independent_of_chunks_threads_and_seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic_file: Path) -> None:
    """Each cell's random sentence is the same for any chunk size and thread count (the cells
    are compared one by one), and another seed gives another order of the same words."""
    monkeypatch.setattr(sentences_module, "_PARALLEL_MIN_NNZ", 1)

    def sentences(name: str, chunk_size: int, threads: int, seed: int = 42) -> dict[str, str]:
        result = convert_h5ad(synthetic_file, "ds", tmp_path / name, {}, chunk_size, 40, "zstd", threads=threads, seed=seed)
        table = pa.concat_tables([pq.read_table(p, columns=["cell_id", "cell_sentence"]) for p in result.chunk_files])
        return dict(zip(table.column("cell_id").to_pylist(), table.column("cell_sentence").to_pylist()))

    base = sentences("a", 2500, 1)
    assert sentences("b", 97, 2) == base
    assert sentences("c", 1000, 3) == base
    other = sentences("d", 1000, 1, seed=43)
    assert sum(other[c] != base[c] for c in base) > 2000
    whole = [c for c in base if len(base[c].split()) < 40]  # not cut at top 40: the same words
    assert len(whole) > 100 and all(sorted(other[c].split()) == sorted(base[c].split()) for c in whole)
    assert all(len(other[c].split()) == len(base[c].split()) for c in base)


def test_two_writer_threads_same_bytes(tmp_path: Path, synthetic_file: Path) -> None:
    one = convert_h5ad(synthetic_file, "ds", tmp_path / "one", {}, 400, 30, "zstd", writer_threads=1)
    two = convert_h5ad(synthetic_file, "ds", tmp_path / "two", {}, 400, 30, "zstd", writer_threads=2, threads=1)
    assert digests(one.chunk_files) == digests(two.chunk_files)


def test_conversion_of_gzip_compressed_matrix(tmp_path: Path) -> None:
    """HDF5-compressed matrices (as CellxGene ships) read through the chunk cache: same output."""
    plain = write_synthetic_h5ad(tmp_path / "plain.h5ad", 900, 300, 40, seed=2)
    gzip = write_synthetic_h5ad(tmp_path / "gzip.h5ad", 900, 300, 40, seed=2, compression="gzip")
    a = convert_h5ad(plain, "ds", tmp_path / "a", {}, 250, 10, "zstd")
    b = convert_h5ad(gzip, "ds", tmp_path / "b", {}, 250, 10, "zstd")
    assert digests(a.chunk_files) == digests(b.chunk_files)


# -- the background writer ------------------------------------------------------------------------
def _rows(start: int, stop: int) -> pa.Table:
    return pa.table({"i": pa.array(range(start, stop), type=pa.int64()), "s": pa.array([f"r{k}" * 50 for k in range(start, stop)])})


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_background_writer_same_files(tmp_path: Path, workers: int) -> None:
    sync = ChunkWriter(tmp_path / "sync", "zstd", 7)
    background = ChunkWriter(tmp_path / f"bg{workers}", "zstd", 7, workers=workers)
    for start, stop in [(0, 3), (3, 20), (20, 20), (20, 41), (41, 45)]:
        sync.write(_rows(start, stop))
        background.write(_rows(start, stop))
    want, got = sync.close(), background.close()
    assert [p.name for p in got] == [p.name for p in want]
    assert digests(got) == digests(want)
    assert background.rows_written == 45


def test_background_writer_raises_the_write_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scrna_assets.core import parquet_io

    def failing(table, path, compression):
        raise OSError("disk full")

    monkeypatch.setattr(parquet_io, "write_chunk_file", failing)
    writer = ChunkWriter(tmp_path / "c", "zstd", 5, workers=1)
    with pytest.raises(OSError, match="disk full"):
        for start in range(0, 50, 5):
            writer.write(_rows(start, start + 5))
        writer.close()


def test_background_writer_aborts_on_error_in_caller(tmp_path: Path) -> None:
    """Leaving the context with an exception stops the writer; nothing is left running."""
    with pytest.raises(RuntimeError), ChunkWriter(tmp_path / "c", "zstd", 5, workers=2) as writer:
        writer.write(_rows(0, 12))
        raise RuntimeError("caller failed")
    assert writer._executor is None


# -- the synthetic generator -----------------------------------------------------------------------
def test_synthetic_file_is_deterministic_and_cellxgene_like(tmp_path: Path) -> None:
    a = write_synthetic_h5ad(tmp_path / "a.h5ad", 300, 500, 40, seed=3, chunk_cells=128)
    b = write_synthetic_h5ad(tmp_path / "b.h5ad", 300, 500, 40, seed=3, chunk_cells=128)
    c = write_synthetic_h5ad(tmp_path / "c.h5ad", 300, 500, 40, seed=4, chunk_cells=128)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    with h5py.File(a) as f:
        indptr = f["X/indptr"][:]
        indices, data = f["X/indices"][:], f["X/data"][:]
        assert f["X"].attrs["encoding-type"] == "csr_matrix" and data.dtype == np.float32
        assert list(f["obs"].attrs["column-order"]) == ["donor_id", "development_stage", "tissue"]
        assert f["var/_index"][0].decode().startswith("ENSG")
    per_cell = np.diff(indptr)
    assert per_cell.min() >= 20 and per_cell.max() <= 60
    for row in range(300):
        cols = indices[indptr[row] : indptr[row + 1]]
        assert np.all(np.diff(cols) > 0)  # sorted, distinct
    assert data.min() >= 1 and np.all(data == np.round(data))
    with H5adSource(a) as source:
        stages = source.obs.column("development_stage", 0, 300).to_pylist()
        assert all(s.endswith("-year-old stage") for s in stages)
        assert source.read_var()["feature_name"].iloc[0] == "GENE00000"



def test_sentences_of_earlier_chunks_stay_intact() -> None:
    """Each chunk's sentences own their bytes: building later chunks never changes them."""
    rng = np.random.default_rng(9)
    dense = rng.integers(0, 9, size=(50, 40)).astype(np.float32)
    matrix, other = sp.csr_matrix(dense), sp.csr_matrix(dense[::-1].copy())
    token_index, vocabulary = random_tokens(40, rng, drop=0.0)
    want, want_other = reference(matrix, token_index, vocabulary, 0, "random")[0], reference(other, token_index, vocabulary, 0, "random")[0]
    with SentenceBuilder(token_index, pa.array(vocabulary), 0) as builder:
        alive = [builder.build_csr(matrix if k % 2 == 0 else other, keys_for(50))[0] for k in range(6)]
    for k, array in enumerate(alive):
        assert array.to_pylist() == (want if k % 2 == 0 else want_other)


# -- reading chunk files back ---------------------------------------------------------------------
def test_read_chunk_file_equals_read_table(tmp_path: Path) -> None:
    """The batch reader gives what ``pq.read_table`` gives: rows, schema, metadata, column order."""
    from scrna_assets.core.parquet_io import read_chunk_file

    table = _rows(0, 3000).append_column("f", pa.array(np.arange(3000) / 7))
    table = table.replace_schema_metadata({"origin": "test"})
    pq.write_table(table, tmp_path / "t.parquet", compression="zstd")
    pq.write_table(table.slice(0, 0), tmp_path / "empty.parquet", compression="zstd")
    for name in ("t.parquet", "empty.parquet"):
        for columns in (None, ["f", "i"], ["s"]):
            want = pq.read_table(tmp_path / name, columns=columns)
            got = read_chunk_file(tmp_path / name, columns)
            assert got.equals(want, check_metadata=True)
            assert got.column_names == want.column_names


def test_iter_chunk_tables_keeps_order(tmp_path: Path) -> None:
    from scrna_assets.core.parquet_io import iter_chunk_tables

    writer = ChunkWriter(tmp_path / "c", "zstd", 100)
    writer.write(_rows(0, 450))
    writer.close()
    tables = list(iter_chunk_tables(tmp_path / "c"))
    assert [t.num_rows for t in tables] == [100, 100, 100, 100, 50]
    assert pa.concat_tables(tables).equals(_rows(0, 450))
    assert list(iter_chunk_tables(tmp_path / "missing")) == []


def test_iter_chunk_batches_are_the_file_in_1024_row_pieces(tmp_path: Path) -> None:
    """Pieces of 1,024 rows with the file's schema (metadata included); an empty file is one
    empty piece, so a reader still sees its columns."""
    from scrna_assets.core.parquet_io import iter_chunk_batches

    table = _rows(0, 2500).replace_schema_metadata({"origin": "test"})
    pq.write_table(table, tmp_path / "t.parquet")
    pq.write_table(table.slice(0, 0), tmp_path / "empty.parquet")
    pieces = list(iter_chunk_batches(tmp_path / "t.parquet"))
    assert [p.num_rows for p in pieces] == [1024, 1024, 452]
    assert all(p.schema.equals(table.schema, check_metadata=True) for p in pieces)
    assert pa.concat_tables(pieces).equals(table)
    assert [p.column_names for p in iter_chunk_batches(tmp_path / "t.parquet", ["i"])] == [["i"]] * 3
    empty = list(iter_chunk_batches(tmp_path / "empty.parquet"))
    assert len(empty) == 1 and empty[0].num_rows == 0 and empty[0].schema.equals(table.schema, check_metadata=True)

"""Malformed CSR count matrices (the input boundary): what scipy's ``check_format(full_check=True)``
rejects is refused with one message naming the file, the matrix, the first offending row and what
is wrong; nothing is read out of bounds (a bad index once crashed the process, or wrapped round to
the last gene). A gene stored twice in a row is valid CSR: it is one gene with the sum of its
values, as anndata/scipy read it. Dense float16, int32 and bool matrices convert."""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata
import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from scrna_assets.core import sentences as sentences_module
from scrna_assets.core.convert import convert_h5ad
from scrna_assets.core.errors import InputError
from scrna_assets.core.h5ad_reader import H5adSource
from scrna_assets.core.sentences import TIE_BREAKS, SentenceBuilder, cell_tie_keys
from scrna_assets_tests.core import h5ad_factory as factory

# 6 cells x 5 genes (the bad-input corpus' matrix). As CSR: 15 entries,
# indptr [0, 3, 5, 10, 10, 12, 15], indices [0 2 4 | 1 3 | 0 1 2 3 4 | | 0 3 | 1 2 4].
COUNTS = np.array(
    [[3, 0, 1, 0, 2], [0, 5, 0, 1, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [4, 0, 0, 2, 0], [0, 2, 3, 0, 7]],
    dtype=np.float32,
)
TOKENS = factory.TOKENS  # GA GB GC GD GE: var position 0..4


def write_good(path: Path, matrix: object = None) -> Path:
    return factory.write_counts(path, "csr", matrix=COUNTS if matrix is None else matrix)


def corrupt(path: Path, array: str, position: int, value: int) -> None:
    with h5py.File(path, "r+") as f:
        f["X"][array][position] = value


# (case, array, position, value, the problem after "<file>: ")
MALFORMED = [
    ("index n_vars", "indices", 6, 5, "matrix X: row 2: index 5 out of range [0, 5)"),
    ("index far out", "indices", 13, 10**9, "matrix X: row 5: index 1000000000 out of range [0, 5)"),
    ("index -1", "indices", 3, -1, "matrix X: row 1: index -1 out of range [0, 5)"),
    ("indptr decreasing", "indptr", 2, 2, "matrix X: row 1: indptr decreases (3 -> 2)"),
    ("indptr past nnz", "indptr", 6, 16, "matrix X: row 5: indptr ends at 16, not at nnz 15"),
    ("indptr not at 0", "indptr", 0, 1, "matrix X: row 0: indptr starts at 1, not 0"),
    ("indptr mid past nnz", "indptr", 4, 40, "matrix X: row 3: indptr 40 is past nnz 15"),
]
# indptr ending below nnz: scipy's check_format drops the trailing entries (no error); refused
# here all the same, as entries that belong to no row are a damaged file
SHORT_INDPTR = ("indptr short of nnz", "indptr", 6, 14, "matrix X: row 5: indptr ends at 14, not at nnz 15")


def scipy_rejects(path: Path) -> bool:
    with h5py.File(path, "r") as f:
        x = f["X"]
        arrays = (x["data"][:], x["indices"][:], x["indptr"][:])
    try:  # the constructor runs the cheap part of the check itself
        sp.csr_matrix(arrays, shape=(6, 5)).check_format(full_check=True)
    except ValueError:
        return True
    return False


@pytest.mark.parametrize(("case", "array", "position", "value", "problem"), MALFORMED + [SHORT_INDPTR], ids=lambda v: v if isinstance(v, str) else None)
@pytest.mark.parametrize("tie_break", TIE_BREAKS)
def test_malformed_csr_is_refused(tmp_path: Path, case: str, array: str, position: int, value: int, problem: str, tie_break: str) -> None:
    path = write_good(tmp_path / "bad.h5ad")
    corrupt(path, array, position, value)
    out = tmp_path / "out"
    with pytest.raises(InputError) as info:
        convert_h5ad(path, "ds", out, factory.HGNC_MAP, 100, 0, "zstd", tie_break=tie_break)
    assert str(info.value) == f"{path}: {problem}"
    assert info.value.path == str(path) and info.value.problem == problem
    assert not list(out.rglob("*.parquet")) if out.exists() else True


@pytest.mark.parametrize(("case", "array", "position", "value", "problem"), MALFORMED, ids=lambda v: v if isinstance(v, str) else None)
def test_scipy_rejects_each_malformed_case(tmp_path: Path, case: str, array: str, position: int, value: int, problem: str) -> None:
    """The oracle: the line between valid and malformed is scipy's."""
    good = write_good(tmp_path / "good.h5ad")
    assert not scipy_rejects(good)
    corrupt(good, array, position, value)
    assert scipy_rejects(good)


@pytest.mark.parametrize(("case", "array", "position", "value", "problem"), MALFORMED + [SHORT_INDPTR], ids=lambda v: v if isinstance(v, str) else None)
@pytest.mark.parametrize("chunk_size", [1, 2, 4, 100])
def test_every_reader_refuses_at_the_first_offending_row(tmp_path: Path, case: str, array: str, position: int, value: int, problem: str,
                                                        chunk_size: int) -> None:
    """``iter_csr_parts`` (reused buffers) and ``iter_chunks`` (scipy chunks), any chunk size:
    the same message; rows before the offending one are read."""
    path = write_good(tmp_path / "bad.h5ad")
    corrupt(path, array, position, value)
    row = int(problem.split("row ")[1].split(":")[0])
    for reader in ("iter_csr_parts", "iter_chunks"):
        with H5adSource(path) as source:
            parts = getattr(source, reader)(chunk_size)
            done = 0
            with pytest.raises(InputError) as info:
                for part in parts:
                    done = part.stop
        assert str(info.value) == f"{path}: {problem}", reader
        assert done <= row


def test_malformed_row_in_a_later_chunk(tmp_path: Path) -> None:
    counts = factory.random_counts(300, 5, seed=3)
    path = write_good(tmp_path / "bad.h5ad", counts)
    with h5py.File(path, "r+") as f:
        indptr = f["X"]["indptr"][:]
        row = int(np.flatnonzero(np.diff(indptr) > 0)[np.flatnonzero(np.diff(indptr) > 0) > 200][0])
        f["X"]["indices"][indptr[row]] = 5
    for chunk_size in (7, 64, 1000):
        with pytest.raises(InputError, match=rf"^{path}: matrix X: row {row}: index 5 out of range \[0, 5\)$"), H5adSource(path) as source:
            list(source.iter_csr_parts(chunk_size))


@pytest.mark.parametrize("tie_break", TIE_BREAKS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])  # float64 with 53-bit values: the numpy path
@pytest.mark.parametrize(("bad", "row"), [(5, 2), (-1, 1), (10**9, 5), (2**31 - 1, 0)])
def test_builder_refuses_bad_index_without_crashing(monkeypatch: pytest.MonkeyPatch, tie_break: str, threads: int, dtype: type,
                                                     bad: int, row: int) -> None:
    """A direct caller with an index out of range gets a ValueError naming the row, never a crash
    or a wrapped-round gene, on the compiled and the numpy path, with and without overwrite."""
    monkeypatch.setattr(sentences_module, "_PARALLEL_MIN_NNZ", 1)
    matrix = sp.csr_matrix(COUNTS.astype(dtype) + (np.float64(1e-9) if dtype is np.float64 else 0) * (COUNTS > 0))
    position = {2: 6, 1: 3, 5: 13, 0: 0}[row]
    keys = cell_tie_keys(pa.array([f"c{i}" for i in range(6)]), 42, "ds")
    for overwrite in (False, True):
        indices = matrix.indices.copy()
        indices[position] = bad
        with SentenceBuilder(np.arange(5, dtype=np.int32), pa.array(TOKENS), 0, threads=threads, tie_break=tie_break) as builder:
            with pytest.raises(ValueError, match=rf"^row {row}: index {bad} out of range \[0, 5\)$"):
                builder.build(matrix.indptr, indices, matrix.data, overwrite_indices=overwrite, cell_keys=keys)


@pytest.mark.parametrize("tie_break", TIE_BREAKS)
def test_builder_refuses_broken_indptr(tie_break: str) -> None:
    matrix = sp.csr_matrix(COUNTS)
    keys = cell_tie_keys(pa.array([f"c{i}" for i in range(6)]), 42, "ds")
    cases = [
        (np.array([0, 3, 2, 10, 10, 12, 15]), r"^row 1: indptr decreases \(3 -> 2\)$"),
        (np.array([0, 3, 5, 10, 10, 12, 16]), r"^row 5: indptr 16 is past the end of indices \(15\) or data \(15\)$"),
        (np.array([-1, 3, 5, 10, 10, 12, 15]), r"^row 0: indptr starts at -1, below 0$"),
        (np.array([], dtype=np.int64), "indptr is empty"),
    ]
    with SentenceBuilder(np.arange(5, dtype=np.int32), pa.array(TOKENS), 0, tie_break=tie_break) as builder:
        for indptr, message in cases:
            with pytest.raises(ValueError, match=message):
                builder.build(indptr, matrix.indices.copy(), matrix.data, cell_keys=keys[: max(0, len(indptr) - 1)])


def test_builder_refuses_token_index_past_the_vocabulary() -> None:
    with pytest.raises(ValueError, match="token_index holds token 5"):
        SentenceBuilder(np.arange(6, dtype=np.int32), pa.array(TOKENS), 0)


# -- a gene listed twice in one row: one gene, the sum -------------------------------------------
def expected_sentences(dense: np.ndarray) -> list[str]:
    """Value descending, ties by var position: from the (summed) dense values."""
    out = []
    for row in dense:
        cols = [c for c in np.argsort(-row.astype(np.float64), kind="stable") if row[c] > 0]
        out.append(" ".join(TOKENS[c] for c in cols))
    return out


def sentences_of(path: Path, out: Path, tie_break: str, chunk_size: int = 100) -> list[str]:
    files = convert_h5ad(path, "ds", out, factory.HGNC_MAP, chunk_size, 0, "zstd", tie_break=tie_break).chunk_files
    return pa.concat_tables([pq.read_table(p) for p in files]).column("cell_sentence").to_pylist()


def write_repeated_gene(path: Path, sorted_row: bool) -> Path:
    """Row 5 stores gene GC twice (4 and 5: 9 in all, above GE's 7): summed it comes first, as
    each entry alone (4, 5) it would come after GE, twice."""
    write_good(path)
    with h5py.File(path, "r+") as f:
        f["X"]["indices"][12:15] = [2, 2, 4] if sorted_row else [2, 4, 2]
        f["X"]["data"][12:15] = [4, 5, 7] if sorted_row else [4, 7, 5]
    return path


@pytest.mark.parametrize("sorted_row", [True, False])
@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_repeated_gene_is_one_gene_with_the_sum(tmp_path: Path, sorted_row: bool, chunk_size: int) -> None:
    path = write_repeated_gene(tmp_path / "dup.h5ad", sorted_row)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = anndata.read_h5ad(path).X
    assert not scipy_rejects(path)  # valid CSR
    dense = np.asarray(x.toarray())  # a computation on the matrix anndata returns: scipy sums duplicates
    assert dense[5].tolist() == [0, 0, 9, 0, 7]
    want = expected_sentences(dense)
    assert want[5] == "GC GE"
    assert sentences_of(path, tmp_path / "position", "position", chunk_size) == want
    shuffled = sentences_of(path, tmp_path / "random", "random", chunk_size)
    for got, expected in zip(shuffled, want):
        words = got.split()
        assert len(words) == len(set(words)) and sorted(words) == sorted(expected.split())
    assert shuffled[5] == "GC GE"  # distinct values: no tie to break


def test_repeated_gene_in_every_row_through_both_paths(tmp_path: Path) -> None:
    """Every entry of a random matrix split in two stored parts (sorted rows): the same
    sentences as the matrix itself, through the reused-buffer reader and the compiled loops."""
    counts = factory.random_counts(50, 5, seed=9)
    good = write_good(tmp_path / "good.h5ad", counts)
    doubled = tmp_path / "doubled.h5ad"
    matrix = sp.csr_matrix(counts)
    half = np.floor(matrix.data / 2).astype(np.float32)
    data = np.stack([half, matrix.data - half], axis=1).ravel()
    indices = np.repeat(matrix.indices, 2)
    write_good(doubled, counts)
    with h5py.File(doubled, "r+") as f:
        for name, values in (("data", data), ("indices", indices), ("indptr", matrix.indptr * 2)):
            del f["X"][name]
            f["X"].create_dataset(name, data=values)
    for tie_break in TIE_BREAKS:
        for chunk_size in (3, 100):
            assert sentences_of(doubled, tmp_path / f"d-{tie_break}-{chunk_size}", tie_break, chunk_size) == \
                sentences_of(good, tmp_path / f"g-{tie_break}-{chunk_size}", tie_break, chunk_size)


# -- value dtypes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", factory.MATRIX_FORMATS)
@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.bool_, np.uint16])
def test_value_dtypes_convert(tmp_path: Path, fmt: str, dtype: type) -> None:
    """float16 (which scipy.sparse does not hold: read as float32, exact), int32 and bool."""
    counts = COUNTS.astype(dtype)
    path = tmp_path / "in.h5ad"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = factory.as_format(counts, fmt) if dtype is not np.float16 or fmt == "dense" else None
    if x is None:  # scipy cannot build a float16 sparse matrix: write CSR/CSC float32, then store float16
        factory.write_counts(path, fmt, matrix=COUNTS)
        with h5py.File(path, "r+") as f:
            values = f["X"]["data"][:]
            del f["X"]["data"]
            f["X"].create_dataset("data", data=values.astype(np.float16))
    else:
        factory.write_counts(path, fmt, matrix=counts)
    with h5py.File(path, "r") as f:
        stored = f["X"] if fmt == "dense" else f["X"]["data"]
        assert stored.dtype == np.dtype(dtype)
    want = expected_sentences(COUNTS.astype(dtype).astype(np.float64))
    for tie_break in TIE_BREAKS:
        got = sentences_of(path, tmp_path / f"out-{tie_break}", tie_break, chunk_size=4)
        if tie_break == "position":
            assert got == want
        else:
            assert [sorted(s.split()) for s in got] == [sorted(s.split()) for s in want]
    with H5adSource(path) as source:
        chunks = list(source.iter_chunks(4))
    np.testing.assert_array_equal(sp.vstack([c.matrix for c in chunks]).toarray(), COUNTS.astype(dtype).astype(np.float32))

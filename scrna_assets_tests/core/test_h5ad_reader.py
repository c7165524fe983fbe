"""H5adSource (matrix choice, validation, chunked CSR/CSC/dense reading) and ObsReader."""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata
import h5py
import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from scrna_assets.core.errors import InputError
from scrna_assets.core.h5ad_reader import H5adSource, MatrixChunk
from scrna_assets.core.obs_reader import ObsReader
from scrna_assets_tests.core import h5ad_factory as factory

def read_adata(path: Path, backed: bool = False) -> anndata.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return anndata.read_h5ad(path, backed="r" if backed else None)


def all_chunks(path: Path, chunk_size: int, matrix: str = "auto", spill_dir: Path | None = None) -> list[MatrixChunk]:
    with H5adSource(path, matrix) as source:
        return list(source.iter_chunks(chunk_size, spill_dir=spill_dir))


def canonical(matrix: sp.csr_matrix) -> tuple[list[int], list[int], list[float], str]:
    """CSR content after sorting indices: indptr, indices, data, dtype."""
    m = matrix.copy()
    m.sort_indices()
    return m.indptr.tolist(), m.indices.tolist(), m.data.tolist(), m.data.dtype.str


def stacked(chunks: list[MatrixChunk], n_vars: int) -> np.ndarray:
    if not chunks:
        return np.zeros((0, n_vars))
    return sp.vstack([c.matrix for c in chunks]).toarray()


# -- matrix choice ----------------------------------------------------------------------------
def test_auto_prefers_raw_then_counts_then_x(tmp_path: Path) -> None:
    """The count matrix is raw.X if present, else layers['counts'], else X (the data contract)."""
    with_raw = factory.write_with_counts_layer(tmp_path / "raw.h5ad", with_raw=True)
    counts_only = factory.write_with_counts_layer(tmp_path / "counts.h5ad", with_raw=False)
    x_only = factory.write_counts(tmp_path / "x.h5ad")
    expected = {with_raw: ("raw.X", factory.COUNTS * 10), counts_only: ("counts", factory.COUNTS), x_only: ("X", factory.COUNTS)}
    for path, (name, values) in expected.items():
        with H5adSource(path) as source:
            assert source.matrix_name == name
            assert (source.n_obs, source.n_vars) == (7, 5)
            np.testing.assert_array_equal(stacked(list(source.iter_chunks(4)), 5), values)


@pytest.mark.parametrize(
    ("matrix", "expected_scale", "encoding"),
    [("raw.X", 10.0, "csr"), ("counts", 1.0, "csr"), ("X", None, "csr")],
)
def test_matrix_override(tmp_path: Path, matrix: str, expected_scale: float | None, encoding: str) -> None:
    """``matrix=`` picks that matrix even when auto would pick another."""
    path = factory.write_with_counts_layer(tmp_path / "layers.h5ad", with_raw=True)
    with H5adSource(path, matrix) as source:
        assert source.matrix_name == matrix
        assert source.encoding == encoding
        values = stacked(list(source.iter_chunks(3)), 5)
    expected = np.log1p(factory.COUNTS) / 3.0 if expected_scale is None else factory.COUNTS * expected_scale
    np.testing.assert_allclose(values, expected, rtol=1e-6)


@pytest.mark.parametrize("matrix", ["raw.X", "counts"])
def test_absent_requested_matrix_is_input_error_naming_file(tmp_path: Path, matrix: str) -> None:
    """Asking for a matrix the file lacks must fail with the file and the matrix in the message."""
    path = factory.write_counts(tmp_path / "x_only.h5ad")
    with pytest.raises(InputError) as info:
        H5adSource(path, matrix)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    assert matrix in str(info.value)


def test_unknown_matrix_choice_is_value_error(tmp_path: Path) -> None:
    """A typo in ``matrix=`` is a usage error, raised before the file is read."""
    path = factory.write_counts(tmp_path / "x.h5ad")
    with pytest.raises(ValueError, match="layers"):
        H5adSource(path, "layers")


def test_no_matrix_at_all_is_input_error(tmp_path: Path) -> None:
    """No raw.X, no counts layer, no X: refused, naming the file."""
    path = factory.write_without_x(tmp_path / "nox.h5ad")
    with pytest.raises(InputError) as info:
        H5adSource(path)
    assert info.value.path == str(path)
    assert "no count matrix" in str(info.value)
    with pytest.raises(InputError):
        H5adSource(path, "X")


def test_not_an_hdf5_file_is_input_error(tmp_path: Path) -> None:
    """A file that is not HDF5 gives InputError (one clear line), not an h5py OSError."""
    path = tmp_path / "broken.h5ad"
    path.write_bytes(b"this is not hdf5")
    with pytest.raises(InputError) as info:
        H5adSource(path)
    assert info.value.path == str(path)


def test_context_manager_closes_file(tmp_path: Path) -> None:
    """The HDF5 handle is closed on exit, so files are not left open across a run."""
    path = factory.write_counts(tmp_path / "x.h5ad")
    with H5adSource(path) as source:
        assert source.file.id.valid
    assert not source.file.id.valid


def test_read_var_belongs_to_chosen_matrix(tmp_path: Path) -> None:
    """raw.X comes with raw.var (5 genes); X comes with var (3 genes)."""
    path = factory.write_with_raw(tmp_path / "raw.h5ad")
    with H5adSource(path) as source:
        assert source.matrix_name == "raw.X"
        var = source.read_var()
        assert list(var.index) == factory.GENE_IDS
        assert list(var["feature_name"]) == factory.FEATURE_NAMES
    with H5adSource(path, "X") as source:
        assert source.encoding == "dense"
        assert list(source.read_var().index) == factory.GENE_IDS[:3]


# -- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", factory.MATRIX_FORMATS)
@pytest.mark.parametrize("kind", ["negative", "nan", "inf", "-inf"])
def test_bad_values_refused_with_path_and_matrix(tmp_path: Path, fmt: str, kind: str) -> None:
    """Negative or non-finite values are refused; the message names the file path and the matrix."""
    path = factory.write_bad_values(tmp_path / f"bad_{kind}_{fmt}.h5ad", kind, fmt)
    with pytest.raises(InputError) as info:
        all_chunks(path, 3)
    message = str(info.value)
    assert info.value.path == str(path)
    assert str(path) in message
    assert "matrix X" in message
    assert ("negative" if kind == "negative" else "non-finite") in message


@pytest.mark.parametrize(("where", "name"), [("counts", "counts"), ("raw.X", "raw.X")])
def test_bad_values_in_other_matrices_name_that_matrix(tmp_path: Path, where: str, name: str) -> None:
    """The refusal names the matrix actually read (layers counts / raw.X), not X."""
    path = factory.write_bad_values(tmp_path / f"bad_{name}.h5ad", "negative", "csr", where=where)
    with pytest.raises(InputError, match=f"matrix {name} "):
        all_chunks(path, 100)
    # the same file's X is clean and can still be read when asked for
    assert stacked(all_chunks(path, 100, matrix="X"), 5).sum() == factory.COUNTS.sum()


def test_integer_and_float64_matrices_are_accepted(tmp_path: Path) -> None:
    """Integer and float64 matrices pass validation and keep their values."""
    for dtype in (np.int64, np.int32):
        for fmt in factory.MATRIX_FORMATS:
            path = factory.write_integer(tmp_path / f"int_{dtype.__name__}_{fmt}.h5ad", fmt, dtype)
            np.testing.assert_array_equal(stacked(all_chunks(path, 2), 5), factory.COUNTS)
    for fmt in factory.MATRIX_FORMATS:
        path = factory.write_float64(tmp_path / f"f64_{fmt}.h5ad", fmt)
        chunks = all_chunks(path, 2)
        assert chunks[0].matrix.dtype == np.float64
        np.testing.assert_array_equal(stacked(chunks, 5), factory.COUNTS)


# -- chunking ---------------------------------------------------------------------------------
def test_chunk_size_must_be_positive(tmp_path: Path) -> None:
    path = factory.write_counts(tmp_path / "x.h5ad")
    with H5adSource(path) as source, pytest.raises(ValueError):
        next(source.iter_chunks(0))


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 50])
def test_chunk_boundaries(tmp_path: Path, chunk_size: int) -> None:
    """Chunks are consecutive [start, stop) row ranges of at most chunk_size rows."""
    path = factory.write_counts(tmp_path / "x.h5ad")
    chunks = all_chunks(path, chunk_size)
    starts = list(range(0, 7, chunk_size))
    assert [(c.start, c.stop) for c in chunks] == [(s, min(s + chunk_size, 7)) for s in starts]
    assert all(isinstance(c.matrix, sp.csr_matrix) and c.matrix.shape == (c.stop - c.start, 5) for c in chunks)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("chunk_size", [1, 3, 23, 100])
def test_csc_and_dense_give_the_same_chunks_as_csr(tmp_path: Path, chunk_size: int, dtype: type) -> None:
    """CSR, CSC and dense storage of one matrix yield identical CSR chunks (sorted indices)."""
    results = {}
    for fmt in factory.MATRIX_FORMATS:
        path = factory.write_random(tmp_path / f"{fmt}.h5ad", fmt, n_obs=23, n_vars=11, seed=7, dtype=dtype)
        with H5adSource(path) as source:
            assert source.encoding == fmt
            results[fmt] = [(c.start, c.stop, canonical(c.matrix)) for c in source.iter_chunks(chunk_size)]
    assert results["csc"] == results["csr"]
    assert results["dense"] == results["csr"]
    assert len(results["csr"]) == -(-23 // chunk_size)
    expected = sp.csr_matrix(factory.random_counts(23, 11, 7, dtype))
    rebuilt = sp.vstack([sp.csr_matrix((d, i, p), shape=(len(p) - 1, 11)) for _, _, (p, i, d, _) in results["csr"]])
    np.testing.assert_array_equal(rebuilt.toarray(), expected.toarray())


@pytest.mark.parametrize("chunk_size", [1, 4, 23])
def test_small_read_blocks_give_the_same_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_size: int) -> None:
    """Dense rows read in several blocks per chunk and CSC columns read in several blocks give the
    same chunks as CSR (the block sizes are shrunk so small inputs take the multi-block paths)."""
    from scrna_assets.core import h5ad_reader

    monkeypatch.setattr(h5ad_reader, "_DENSE_BLOCK_VALUES", 2 * 11)  # 2 rows per dense read
    monkeypatch.setattr(h5ad_reader, "_CSC_BLOCK_VALUES", 5)  # ~1-2 columns per CSC read
    results = {}
    for fmt in factory.MATRIX_FORMATS:
        path = factory.write_random(tmp_path / f"{fmt}.h5ad", fmt, n_obs=23, n_vars=11, seed=11)
        results[fmt] = [(c.start, c.stop, canonical(c.matrix)) for c in all_chunks(path, chunk_size)]
    assert results["csc"] == results["csr"]
    assert results["dense"] == results["csr"]


def test_csc_spill_files_are_removed(tmp_path: Path) -> None:
    """CSC regrouping spills to temporary files; none may be left behind."""
    path = factory.write_random(tmp_path / "csc.h5ad", "csc", n_obs=23, n_vars=11)
    spill = tmp_path / "spill"
    spill.mkdir()
    chunks = all_chunks(path, 4, spill_dir=spill)
    assert len(chunks) == 6
    assert list(spill.iterdir()) == []


def test_csc_spill_removed_after_refusal(tmp_path: Path) -> None:
    """Even when a CSC chunk is refused (negative value), spill files are cleaned up."""
    path = factory.write_bad_values(tmp_path / "bad.h5ad", "negative", "csc")
    spill = tmp_path / "spill"
    spill.mkdir()
    with pytest.raises(InputError):
        all_chunks(path, 3, spill_dir=spill)
    assert list(spill.iterdir()) == []


@pytest.mark.parametrize("fmt", factory.MATRIX_FORMATS)
def test_zero_cells_yield_no_chunks(tmp_path: Path, fmt: str) -> None:
    path = factory.write_zero_cells(tmp_path / "zero.h5ad", fmt)
    with H5adSource(path) as source:
        assert (source.n_obs, source.n_vars) == (0, 5)
        assert list(source.iter_chunks(3)) == []


def test_stored_zeros_are_kept_as_stored(tmp_path: Path) -> None:
    """The reader does not drop stored zeros (sentences skip them later); values stay equal."""
    path = factory.write_stored_zero(tmp_path / "sz.h5ad")
    chunks = all_chunks(path, 3)
    assert sum(c.matrix.nnz for c in chunks) == factory.COUNTS.size
    np.testing.assert_array_equal(stacked(chunks, 5), factory.COUNTS)


# -- obs --------------------------------------------------------------------------------------
def test_obs_reader_every_column_kind(tmp_path: Path) -> None:
    """Categoricals -> strings, numbers stay numbers, bool stays bool, missing -> null."""
    path = factory.write_obs_kinds(tmp_path / "kinds.h5ad")
    expected_types = {
        "cat": pa.string(),
        "cat_all_nan": pa.string(),
        "cat_int": pa.string(),
        "text": pa.string(),
        "n_int": pa.int64(),
        "n_int32": pa.int32(),
        "f_nan": pa.float64(),
        "flag": pa.bool_(),
        "nullable_int": pa.int64(),
        "nullable_bool": pa.bool_(),
        "nullable_str": pa.string(),
    }
    with h5py.File(path, "r") as handle:
        reader = ObsReader(handle["obs"])
        assert reader.columns == list(factory.KINDS_EXPECTED_7)
        assert reader.n_obs == 7
        assert reader.index(0, 7).to_pylist() == factory.CELL_IDS
        whole = reader.read(0, 7)
        assert list(whole) == list(factory.KINDS_EXPECTED_7)
        for name, values in factory.KINDS_EXPECTED_7.items():
            assert whole[name].type == expected_types[name], name
            assert whole[name].to_pylist() == values, name
            assert reader.column(name, 0, 0).type == expected_types[name], name
            # slices at odd offsets give the same values as the whole column
            for start, stop in [(0, 3), (3, 6), (6, 7), (1, 2), (5, 7)]:
                assert reader.column(name, start, stop).to_pylist() == values[start:stop], (name, start)
        for name in ("cat", "cat_all_nan", "cat_int", "f_nan", "nullable_str"):
            assert "nan" not in [str(v).lower() for v in whole[name].to_pylist() if v is not None]


def test_obs_reader_index_slices(tmp_path: Path) -> None:
    path = factory.write_counts(tmp_path / "x.h5ad")
    with h5py.File(path, "r") as handle:
        reader = ObsReader(handle["obs"])
        assert reader.index(2, 5).to_pylist() == ["cell2", "cell3", "cell4"]
        assert reader.index(0, 0).type == pa.string()


def test_obs_reader_legacy_categorical_layout(tmp_path: Path) -> None:
    """anndata 0.7 categoricals (codes dataset + ``categories`` reference) read as strings/null."""
    path = factory.write_legacy_categorical(tmp_path / "legacy.h5ad")
    with H5adSource(path) as source:
        assert source.obs.columns == ["donor_id"]
        assert source.obs.column("donor_id", 0, 7).to_pylist() == ["x", "y", None, "x", "y", "y", "x"]
        assert source.obs.column("donor_id", 2, 4).to_pylist() == [None, "x"]


# -- real files -------------------------------------------------------------------------------
def test_real_perturbseq_csr_chunks_match_anndata(shared_data: Path) -> None:
    """500x2000 CSR counts: 4 chunks of 128 rows whose values equal anndata's X rows."""
    path = shared_data / "h5ad" / "cxg_schema7.1_small_perturbations_marson_cd4_perturbseq.h5ad"
    expected = read_adata(path).X
    with H5adSource(path) as source:
        assert (source.matrix_name, source.encoding, source.n_obs, source.n_vars) == ("X", "csr", 500, 2000)
        chunks = list(source.iter_chunks(128))
    assert [(c.start, c.stop) for c in chunks] == [(0, 128), (128, 256), (256, 384), (384, 500)]
    assert sum(c.matrix.nnz for c in chunks) == 268478
    assert (sp.vstack([c.matrix for c in chunks]) != expected).nnz == 0


def test_real_csc_file_matches_anndata_when_validation_is_off(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CSC regrouping on a real CSC file reproduces anndata's rows (validation switched off,
    because the file is scaled and would be refused)."""
    path = shared_data / "h5ad" / "tiledbsoma_pbmc_small_x_csc.h5ad"
    expected = sp.csr_matrix(read_adata(path).X)
    monkeypatch.setattr(H5adSource, "_validate", lambda self, chunk: None)
    for chunk_size in (1, 7, 80, 200):
        with H5adSource(path) as source:
            assert source.encoding == "csc"
            chunks = list(source.iter_chunks(chunk_size))
        assert len(chunks) == -(-80 // chunk_size)
        np.testing.assert_array_equal(sp.vstack([c.matrix for c in chunks]).toarray(), expected.toarray())


def test_real_csc_scaled_is_refused(shared_data: Path) -> None:
    """pbmc_small with CSC X holds scaled (negative) values: refused, naming file and matrix."""
    path = shared_data / "h5ad" / "tiledbsoma_pbmc_small_x_csc.h5ad"
    with pytest.raises(InputError) as info:
        all_chunks(path, 32)
    assert str(path) in str(info.value)
    assert "matrix X has negative values" in str(info.value)


def test_real_dense_with_raw_uses_raw(shared_data: Path) -> None:
    """Dense scaled X with a 230-gene raw: auto picks raw.X (CSR, 230 genes); X is refused."""
    path = shared_data / "h5ad" / "tiledbsoma_pbmc_small_dense_with_raw.h5ad"
    adata = read_adata(path)
    with H5adSource(path) as source:
        assert (source.matrix_name, source.encoding, source.n_obs, source.n_vars) == ("raw.X", "csr", 80, 230)
        assert list(source.read_var().index) == list(adata.raw.var_names)
        chunks = list(source.iter_chunks(30))
    np.testing.assert_array_equal(stacked(chunks, 230), adata.raw.X.toarray())
    with H5adSource(path, "X") as source:
        assert (source.encoding, source.n_vars) == ("dense", 20)
        with pytest.raises(InputError, match="matrix X has negative values"):
            list(source.iter_chunks(30))


def test_real_no_x_is_input_error(shared_data: Path) -> None:
    """pbmc3k processed has no X, no raw, no counts layer."""
    path = shared_data / "h5ad" / "tiledbsoma_pbmc3k_processed_no_X.h5ad"
    with pytest.raises(InputError) as info:
        H5adSource(path)
    assert info.value.path == str(path)


def test_real_all_nan_categorical_is_all_null(shared_data: Path) -> None:
    """An all-NaN categorical with no categories reads as 80 null strings; the file's scaled X
    is refused."""
    path = shared_data / "h5ad" / "tiledbsoma_pbmc_small_categorical_all_nan.h5ad"
    with H5adSource(path) as source:
        column = source.obs.column("categ_int_nan", 0, 80)
        assert column.type == pa.string()
        assert column.null_count == 80
        assert source.obs.column("groups", 0, 3).to_pylist() == list(read_adata(path).obs["groups"][:3].astype(str))
        assert source.obs.column("orig.ident", 0, 2).type == pa.int32()
        with pytest.raises(InputError, match="negative"):
            list(source.iter_chunks(80))


def test_real_tenx_old_layout_obs_has_no_columns(shared_data: Path) -> None:
    """The 10x multiome file (no root encoding attrs, empty float column-order) has no obs columns."""
    path = shared_data / "h5ad" / "tiledbsoma_10x_multiome_subset_100x100_counts.h5ad"
    with H5adSource(path) as source:
        assert source.obs.columns == []
        assert source.obs.index(0, 2).to_pylist() == ["AAACAGCCAAACAACA-1", "AAACAGCCAAACATAG-1"]
        assert sum(c.matrix.nnz for c in source.iter_chunks(10)) == 13
        assert list(source.read_var()["gene_ids"][:2]) == ["ENSG00000243485", "ENSG00000237613"]


def test_real_tiny_raw_has_stored_zero(shared_data: Path) -> None:
    """tiny2x7: auto reads raw.X, which stores a zero (X has 1.5 there)."""
    path = shared_data / "h5ad" / "cxg_schema7_example_valid_unlabeled_tiny2x7.h5ad"
    (chunk,) = all_chunks(path, 10)
    assert chunk.matrix.nnz == 14
    assert chunk.matrix.toarray().tolist() == [[0, 1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7]]


@pytest.mark.parametrize(("array", "position", "value", "problem"), [
    ("indptr", 0, 1, "matrix X: column 0: indptr starts at 1, not 0"),
    ("indptr", -1, -1, "matrix X: column 4: indptr ends at {end}, not at nnz {nnz}"),
    ("indices", 0, -1, "matrix X has row indices outside 0-6 in columns 0-4"),
    ("indices", 0, 7, "matrix X has row indices outside 0-6 in columns 0-4"),
])
def test_malformed_csc_is_refused(tmp_path: Path, array: str, position: int, value: int, problem: str) -> None:
    """CSC: indptr must start at 0 and end at nnz, row indices lie in [0, n_obs)."""
    path = factory.write_counts(tmp_path / "bad.h5ad", "csc")
    with h5py.File(path, "r+") as f:
        nnz = f["X"]["indices"].shape[0]
        f["X"][array][position if position >= 0 else f["X"][array].shape[0] - 1] = value if value >= 0 or array == "indices" else nnz - 1
    with pytest.raises(InputError) as info:
        all_chunks(path, 3)
    assert str(info.value) == f"{path}: {problem.format(end=nnz - 1, nnz=nnz)}"


@pytest.mark.parametrize("fmt", ["csr", "csc", "dense"])
def test_float16_matrix_reads_as_float32(tmp_path: Path, fmt: str) -> None:
    """scipy.sparse holds no float16: such values are read as float32 (exact), not refused."""
    path = factory.write_counts(tmp_path / "in.h5ad", fmt)
    with h5py.File(path, "r+") as f:
        name, group = ("X", f) if fmt == "dense" else ("data", f["X"])
        values = group[name][:]
        attrs = dict(group[name].attrs)
        del group[name]
        group.create_dataset(name, data=values.astype(np.float16))
        group[name].attrs.update(attrs)
    chunks = all_chunks(path, 3)
    assert {c.matrix.dtype for c in chunks} == {np.dtype(np.float32)}
    np.testing.assert_array_equal(sp.vstack([c.matrix for c in chunks]).toarray(), factory.COUNTS)

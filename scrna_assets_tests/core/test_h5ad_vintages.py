"""Every on-disk vintage anndata reads, read here with anndata's values (anndata is the oracle);
what anndata cannot read either is refused with one line ``<file>: <element>: <what is wrong>``.

Each vintage is built with h5py (``h5ad_vintages``); the tests check that ``anndata.read_h5ad``
reads it (in memory and ``backed="r"``), then that ``H5adSource`` gives the same obs values,
var table and matrix rows, and that ``convert_h5ad`` writes the sentences and obs columns a
per-cell computation from the anndata object gives. Matrices have distinct values within each
row, so the sentences do not depend on the tie rule.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import anndata
import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from scrna_assets.core import h5ad_reader
from scrna_assets.core.convert import convert_h5ad, output_column_names
from scrna_assets.core.errors import InputError
from scrna_assets.core.h5ad_reader import H5adSource
from scrna_assets.core.obs_reader import ObsReader
from scrna_assets_tests.core import h5ad_vintages as vintages

X = vintages.distinct_counts()
RAW = vintages.distinct_counts(n_vars=8, seed=3, scale=2.0)


def read_adata(path: Path, backed: bool = False) -> anndata.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return anndata.read_h5ad(path, backed="r" if backed else None)


def dense(matrix: object) -> np.ndarray:
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


def expected_matrix(adata: anndata.AnnData, matrix_name: str) -> np.ndarray:
    if matrix_name == "raw.X":
        return dense(adata.raw.X)
    if matrix_name == "counts":
        return dense(adata.layers["counts"])
    return dense(adata.X)


def expected_values(series: pd.Series) -> list:
    """anndata's column as this project's Arrow column reads: categoricals as strings, NaN/NA as null."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        return [None if pd.isna(v) else str(v) for v in series]
    return [None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for v in series.astype(object)]


def expected_type(series: pd.Series) -> pa.DataType:
    dtype = series.dtype
    if isinstance(dtype, (pd.CategoricalDtype, pd.StringDtype)) or dtype == object:
        return pa.string()
    if isinstance(dtype, pd.api.extensions.ExtensionDtype):
        return pa.from_numpy_dtype(dtype.numpy_dtype)
    return pa.from_numpy_dtype(dtype)


def sentences_of(matrix: np.ndarray, tokens: list[str]) -> list[str]:
    """Per cell: the tokens of genes with a value > 0, value descending (values are distinct)."""
    out = []
    for row in matrix:
        genes = sorted((-float(v), j) for j, v in enumerate(row) if v > 0)
        out.append(" ".join(tokens[j] for _, j in genes))
    return out


def assert_reads_like_anndata(path: Path, matrix: str = "auto", chunk_size: int = 4) -> H5adSource:
    """The oracle reads the file; H5adSource gives its obs, var and matrix rows."""
    adata = read_adata(path)
    backed = read_adata(path, backed=True)
    try:
        assert backed.shape == adata.shape
        assert list(backed.obs_names) == list(adata.obs_names)
    finally:
        backed.file.close()
    with H5adSource(path, matrix) as source:
        assert (source.n_obs, source.n_vars) == (adata.n_obs, expected_matrix(adata, source.matrix_name).shape[1])
        # obs: columns, index and values, read in row slices
        slices = [(s, min(s + chunk_size, source.n_obs)) for s in range(0, source.n_obs, chunk_size)] or [(0, 0)]
        assert source.obs.columns == list(adata.obs.columns)
        assert pa.concat_arrays([source.obs.index(*rows) for rows in slices]).to_pylist() == list(adata.obs_names)
        for name in source.obs.columns:
            series = adata.obs[name]
            parts = [source.obs.column(name, *rows) for rows in slices]
            assert pa.concat_arrays(parts).to_pylist() == expected_values(series), name
            assert source.obs.column(name, 0, 0).type == expected_type(series), name
        # var of the chosen matrix
        var = source.read_var()
        expected_var = adata.raw.var if source.matrix_name == "raw.X" else adata.var
        pd.testing.assert_frame_equal(var, expected_var)
        # matrix rows, chunk by chunk, both iterators
        expected = expected_matrix(adata, source.matrix_name)
        for part in source.iter_csr_parts(chunk_size):
            rows = sp.csr_matrix((part.data[: part.indptr[-1]].copy(), part.indices[: part.indptr[-1]].copy(), part.indptr.copy()), shape=(part.stop - part.start, source.n_vars))
            np.testing.assert_array_equal(rows.toarray(), expected[part.start : part.stop])
        chunks = list(source.iter_chunks(chunk_size))
        assert [(c.start, c.stop) for c in chunks] == [rows for rows in slices if rows[1] > rows[0]]
        if chunks:
            np.testing.assert_array_equal(sp.vstack([c.matrix for c in chunks]).toarray(), expected)
    return source


def assert_converts_like_anndata(path: Path, out: Path, matrix: str = "auto", chunk_size: int = 4) -> None:
    """convert_h5ad's cells equal a per-cell computation from anndata's object."""
    adata = read_adata(path)
    result = convert_h5ad(path, "vintage", out / "chunks", {}, chunk_size, 0, "zstd", matrix)
    table = pa.concat_tables([pq.read_table(p) for p in result.chunk_files])
    assert table.num_rows == adata.n_obs
    expected = expected_matrix(adata, result.matrix)
    tokens = list((adata.raw.var_names if result.matrix == "raw.X" else adata.var_names).astype(str))
    sentences = sentences_of(expected, tokens)
    assert table["cell_id"].to_pylist() == list(adata.obs_names)
    assert table["cell_sentence"].to_pylist() == sentences
    assert table["n_genes"].to_pylist() == [len(s.split()) if s else 0 for s in sentences]
    names = output_column_names(list(adata.obs.columns))
    for name in adata.obs.columns:
        assert table[names[name]].to_pylist() == expected_values(adata.obs[name]), name


# -- the vintages -----------------------------------------------------------------------------
VINTAGES: dict[str, Callable[[Path], Path]] = {
    # anndata < 0.7: compound obs/var, uns categories, h5sparse groups, top-level raw.*
    "0.6 h5sparse csr X": lambda p: vintages.write_anndata06(p, X),
    "0.6 h5sparse csc X": lambda p: vintages.write_anndata06(p, X, x_format="csc"),
    "0.6 dense X": lambda p: vintages.write_anndata06(p, X, x_format="dense"),
    "0.6 raw.X h5sparse csr": lambda p: vintages.write_anndata06(p, X, raw_x=RAW),
    "0.6 raw.X h5sparse csc, fixed-length strings": lambda p: vintages.write_anndata06(p, X, x_format="dense", raw_x=RAW, raw_format="csc", fixed_strings=True),
    "0.6 raw.X dense": lambda p: vintages.write_anndata06(p, X, x_format="csc", raw_x=RAW, raw_format="dense"),
    # anndata 0.7: dataframe 0.1.0 with __categories, csr_matrix 0.1.0, raw/ group
    "0.7 csr X": lambda p: vintages.write_anndata07(p, X),
    "0.7 csc X, raw csc": lambda p: vintages.write_anndata07(p, X, x_format="csc", raw_x=RAW, raw_format="csc"),
    "0.7 dense X, fixed-length index": lambda p: vintages.write_anndata07(p, X, x_format="dense", fixed_index=True),
    # current files with one element in another valid encoding
    "current, h5sparse csr X": lambda p: vintages.rewrite_h5sparse(vintages.write_current(p, X)),
    "current, h5sparse csc X": lambda p: vintages.rewrite_h5sparse(vintages.write_current(p, X, fmt="csc")),
    "current, h5sparse raw/X": lambda p: vintages.rewrite_h5sparse(vintages.write_current(p, X, raw_x=RAW), "raw/X"),
    "current, vlen-bytes obs index": lambda p: vintages.rewrite_index(vintages.write_current(p, X), "vlen-bytes"),
    "current, fixed-length obs and var index": lambda p: vintages.rewrite_index(vintages.rewrite_index(vintages.write_current(p, X), "fixed"), "fixed", "var"),
    "current, empty column-order": lambda p: vintages.rewrite_empty_column_order(vintages.write_current(p, X)),
    "current, nullable and vlen-bytes columns": vintages.write_nullable_columns,
    "0.6 zero cells, h5sparse csr": lambda p: vintages.write_anndata06(p, np.zeros((0, 6), dtype=np.float32)),
    "0.6 zero cells, dense": lambda p: vintages.write_anndata06(p, np.zeros((0, 6), dtype=np.float32), x_format="dense"),
    "0.7 zero cells, csc": lambda p: vintages.write_anndata07(p, np.zeros((0, 6), dtype=np.float32), x_format="csc"),
    "obs group without encoding-type": lambda p: vintages.edit(vintages.write_current(p, X), lambda f: [f["obs"].attrs.__delitem__(k) for k in list(f["obs"].attrs)]),
}


@pytest.mark.parametrize("vintage", list(VINTAGES))
def test_vintage_reads_like_anndata(tmp_path: Path, vintage: str) -> None:
    path = VINTAGES[vintage](tmp_path / "in.h5ad")
    for chunk_size in (1, 4, 100):
        assert_reads_like_anndata(path, chunk_size=chunk_size)


@pytest.mark.parametrize("vintage", list(VINTAGES))
def test_vintage_converts_like_anndata(tmp_path: Path, vintage: str) -> None:
    path = VINTAGES[vintage](tmp_path / "in.h5ad")
    assert_converts_like_anndata(path, tmp_path / "out")


@pytest.mark.parametrize("writer", [vintages.write_anndata06, vintages.write_anndata07], ids=["0.6", "0.7"])
def test_legacy_raw_is_found_by_auto_and_by_name(tmp_path: Path, writer: Callable) -> None:
    """auto picks the old file's raw (top-level raw.X in 0.6, raw/X in 0.7); --matrix raw.X too;
    --matrix X reads X with var. Each with the var that belongs to it."""
    path = writer(tmp_path / "in.h5ad", X, raw_x=RAW)
    for matrix in ("auto", "raw.X"):
        with H5adSource(path, matrix) as source:
            assert (source.matrix_name, source.n_vars) == ("raw.X", 8)
            assert list(source.read_var().index) == vintages.RAW_GENES
    with H5adSource(path, "X") as source:
        assert (source.matrix_name, source.n_vars) == ("X", 6)
        assert list(source.read_var().index) == vintages.GENES
    assert_reads_like_anndata(path, "X")
    assert_converts_like_anndata(path, tmp_path / "out_x", matrix="X")


def test_legacy_matrix_encodings_are_the_fast_paths(tmp_path: Path) -> None:
    """h5sparse groups go through the same CSR/CSC paths as current groups (CSR: the buffer-reusing
    fast path, whose indices dtype convert.py reads)."""
    csr = vintages.write_anndata06(tmp_path / "csr.h5ad", X)
    csc = vintages.write_anndata06(tmp_path / "csc.h5ad", X, x_format="csc")
    dense_x = vintages.write_anndata06(tmp_path / "dense.h5ad", X, x_format="dense")
    for path, encoding in ((csr, "csr"), (csc, "csc"), (dense_x, "dense")):
        with H5adSource(path) as source:
            assert source.encoding == encoding
            assert source.value_dtype == "float32"
            list(source.iter_csr_parts(4))
            assert source.integer_values
    with H5adSource(csr) as source:
        assert source.matrix_node["indices"].dtype == np.int32


def test_legacy_categories_follow_anndata_rule(tmp_path: Path) -> None:
    """anndata < 0.7: an integer column with uns/<col>_categories is a categorical only when all
    its codes are below the number of categories (anndata's _clean_uns); otherwise it stays a
    number. A one-element fixed-length category list is that one category."""
    path = vintages.write_anndata06(tmp_path / "in.h5ad", X)

    def change(handle: h5py.File) -> None:
        handle["uns"].create_dataset("n_genes_categories", data=np.array([b"few", b"many"]))  # codes go to 56
        obs = handle["obs"][()]
        obs["batch"] = [0] * len(obs)
        handle["obs"][...] = obs
        del handle["uns/batch_categories"]
        handle["uns"].create_dataset("batch_categories", data=np.array([b"only"]))

    vintages.edit(path, change)
    adata = read_adata(path)
    assert adata.obs["n_genes"].dtype == np.int64 and isinstance(adata.obs["batch"].dtype, pd.CategoricalDtype)
    with H5adSource(path) as source:
        assert source.obs.column("n_genes", 0, 3).to_pylist() == [0, 7, 14]
        assert source.obs.column("batch", 0, 2).to_pylist() == ["only", "only"]
    assert_reads_like_anndata(path)


def test_legacy_uns_title_is_a_fact(tmp_path: Path) -> None:
    """0.6 stored uns strings as one-element fixed-length arrays; anndata reads the element."""
    path = vintages.write_anndata06(tmp_path / "in.h5ad", X)
    assert read_adata(path).uns["title"] == "an old scanpy file"
    with H5adSource(path) as source:
        assert source.uns_facts() == {"title": "an old scanpy file"}


def test_obs_reader_accepts_the_compound_dataset_directly(tmp_path: Path) -> None:
    path = vintages.write_anndata06(tmp_path / "in.h5ad", X)
    with h5py.File(path, "r") as handle:
        reader = ObsReader(handle["obs"])
        assert reader.index_name == "index"
        assert reader.n_obs == 9
        assert reader.column("cell_type", 1, 4).to_pylist() == ["B cell", None, "NK cell"]


def test_unknown_sparse_marking_falls_back_to_anndata_in_row_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sparse group this reader does not recognise (simulated) but anndata's sparse_dataset
    does is read through anndata's backed matrix, one row block per chunk."""
    path = vintages.write_current(tmp_path / "in.h5ad", X)
    monkeypatch.setattr(h5ad_reader, "_sparse_format", lambda group: None)
    sliced: list[tuple[int, int]] = []
    with H5adSource(path) as source:
        assert source.encoding == "csr-anndata"
        assert source.value_dtype == "float32"
        original = type(source._backed).__getitem__

        def spy(self, index):
            sliced.append((index.start, index.stop))
            return original(self, index)

        monkeypatch.setattr(type(source._backed), "__getitem__", spy)
        chunks = list(source.iter_csr_parts(4))
    assert sliced == [(0, 4), (4, 8), (8, 9)]
    assert [(c.start, c.stop) for c in chunks] == sliced
    assert_reads_like_anndata(path)


def test_numeric_development_stage_is_read_as_numbers(tmp_path: Path) -> None:
    """A numeric development_stage is no error for the reader: it stays a number column (the
    age step gives its values no age)."""
    for kind, values in (("int", np.arange(9, dtype=np.int64) + 30), ("float", np.arange(9) / 2 + 30)):
        obs = vintages.legacy_obs()
        obs["development_stage"] = values
        for name, writer in (("06", vintages.write_anndata06), ("07", vintages.write_anndata07), ("cur", vintages.write_current)):
            path = writer(tmp_path / f"{name}_{kind}.h5ad", X, obs=obs)
            with H5adSource(path) as source:
                column = source.obs.column("development_stage", 0, 9)
                assert column.type == pa.from_numpy_dtype(values.dtype)
                assert column.to_pylist() == values.tolist()


# -- refusals: one line, naming file and element ----------------------------------------------
def _codes(handle: h5py.File, value: int) -> None:
    handle["obs/cell_type/codes"][1] = value


def _legacy_code(handle: h5py.File) -> None:
    obs = handle["obs"][()]
    obs["cell_type"][1] = -3
    handle["obs"][...] = obs


def _legacy_2d(path: Path) -> Path:
    vintages.write_anndata06(path, X)
    with h5py.File(path, "r+") as handle:
        obs = handle["obs"][()]
        fields = [(n, obs.dtype.fields[n][0]) for n in obs.dtype.names] + [("X_pca", np.float32, (2,))]
        wider = np.zeros(len(obs), dtype=fields)
        for name in obs.dtype.names:
            wider[name] = obs[name]
        del handle["obs"]
        handle.create_dataset("obs", data=wider)
    return path


def _set_attr(key: str, name: str, value: object) -> Callable[[h5py.File], None]:
    def change(handle: h5py.File) -> None:
        handle[key].attrs[name] = value

    return change


def _order_plus(name: str) -> Callable[[h5py.File], None]:
    def change(handle: h5py.File) -> None:
        order = list(handle["obs"].attrs["column-order"])
        handle["obs"].attrs["column-order"] = np.array(order + [name], dtype=object)

    return change


def _replace(key: str, data: np.ndarray) -> Callable[[h5py.File], None]:
    def change(handle: h5py.File) -> None:
        attrs = dict(handle[key].attrs)
        del handle[key]
        handle.create_dataset(key, data=data).attrs.update(attrs)

    return change


def _delete(key: str) -> Callable[[h5py.File], None]:
    def change(handle: h5py.File) -> None:
        del handle[key]

    return change


REFUSALS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "categorical code above the categories": (
        lambda p: vintages.edit(vintages.write_current(p, X), lambda f: _codes(f, 7)),
        "obs/cell_type: categorical code 7 out of range (3 categories)",
    ),
    "categorical code below -1": (
        lambda p: vintages.edit(vintages.write_current(p, X), lambda f: _codes(f, -3)),
        "obs/cell_type: categorical code -3 out of range (3 categories)",
    ),
    "0.7 categorical code above the categories": (
        lambda p: vintages.edit(vintages.write_anndata07(p, X), lambda f: f["obs/batch"].__setitem__(2, 5)),
        "obs/batch: categorical code 5 out of range (3 categories)",
    ),
    "0.6 categorical code below -1": (
        lambda p: vintages.edit(vintages.write_anndata06(p, X), _legacy_code),
        "obs/cell_type: categorical code -3 out of range (3 categories)",
    ),
    "column-order names a missing column": (
        lambda p: vintages.edit(vintages.write_current(p, X), _order_plus("x")),
        "obs: column-order names missing column 'x'",
    ),
    "obs group with an unknown encoding": (
        lambda p: vintages.edit(vintages.write_current(p, X), _set_attr("obs", "encoding-type", "foo")),
        "obs: unknown encoding 'foo'",
    ),
    "obs column with an unknown encoding": (
        lambda p: vintages.edit(vintages.write_current(p, X), _set_attr("obs/cell_type", "encoding-type", "foo")),
        "obs/cell_type: unknown encoding 'foo'",
    ),
    "2-D obs column": (
        lambda p: vintages.edit(vintages.write_current(p, X), lambda f: vintages.add_obs_column(f, "col", np.zeros((9, 2)))),
        "obs/col: 2-D column (shape (9, 2))",
    ),
    "2-D field in a 0.6 obs": (_legacy_2d, "obs/X_pca: 2-D column (shape (9, 2))"),
    "obs column shorter than obs": (
        lambda p: vintages.edit(vintages.write_current(p, X), lambda f: vintages.add_obs_column(f, "col", np.zeros(5))),
        "obs/col: has 5 rows, but obs has 9",
    ),
    "obs index missing": (
        lambda p: vintages.edit(vintages.write_current(p, X), _delete("obs/_index")),
        "obs: has no index dataset '_index'",
    ),
    "obs is a plain dataset": (
        lambda p: vintages.edit(vintages.write_current(p, X), lambda f: (f.__delitem__("obs"), f.create_dataset("obs", data=np.zeros(9)))),
        "obs: is a dataset of float64 with shape (9,), not a dataframe",
    ),
    "var group with an unknown encoding": (
        lambda p: vintages.edit(vintages.write_current(p, X), _set_attr("var", "encoding-type", "foo")),
        "var: unknown encoding 'foo'",
    ),
    "sparse matrix without indices": (
        lambda p: vintages.edit(vintages.write_current(p, X), _delete("X/indices")),
        "matrix X (csr) has no indices array",
    ),
    "h5sparse matrix with an unknown format": (
        lambda p: vintages.edit(vintages.write_anndata06(p, X), _set_attr("X", "h5sparse_format", "coo")),
        "matrix X has unsupported encoding ''",
    ),
    "indptr too short for the rows": (
        lambda p: vintages.edit(vintages.write_current(p, X), _replace("X/indptr", sp.csr_matrix(X).indptr[:-1])),
        "matrix X has a broken indptr (9 entries for 9 rows)",
    ),
    "matrix of strings": (
        lambda p: vintages.edit(vintages.write_current(p, X, fmt="dense"), _replace("X", X.astype("S3"))),
        "matrix X holds |S3 values, not numbers",
    ),
}


def _open_and_read_everything(path: Path) -> None:
    with H5adSource(path) as source:
        source.read_var()
        for part in source.iter_csr_parts(4):
            source.obs.read(part.start, part.stop)


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusal_is_one_line_naming_file_and_element(tmp_path: Path, case: str) -> None:
    build, problem = REFUSALS[case]
    path = build(tmp_path / "bad.h5ad")
    with pytest.raises(InputError) as info:
        _open_and_read_everything(path)
    assert str(info.value) == f"{path}: {problem}"
    assert info.value.path == str(path)
    assert info.value.__cause__ is None or isinstance(info.value.__cause__, InputError)


def _anndata_reads(path: Path, backed: bool) -> bool:
    try:
        adata = read_adata(path, backed)
        try:
            dense(adata.X[0 : adata.n_obs] if backed else adata.X)
            adata.obs.to_numpy()
            adata.var.to_numpy()
        finally:
            if backed:
                adata.file.close()
    except Exception:  # noqa: BLE001 - any anndata error means: anndata refuses it
        return False
    return True


@pytest.mark.parametrize("case", [c for c in REFUSALS if c != "matrix of strings"])
def test_anndata_cannot_read_the_refused_files_either(tmp_path: Path, case: str) -> None:
    """Each structural refusal is a file anndata cannot read either with ``backed="r"`` (the
    rule's reference). (A matrix of strings anndata reads, but it holds no counts: refused like
    negative values are.)"""
    path = REFUSALS[case][0](tmp_path / "bad.h5ad")
    assert not _anndata_reads(path, backed=True)


def test_refusals_through_convert_are_input_errors(tmp_path: Path) -> None:
    """A bad code found mid-conversion stops convert_h5ad with the same one-line InputError."""
    path = vintages.edit(vintages.write_current(tmp_path / "bad.h5ad", vintages.distinct_counts(n_obs=20)), lambda f: f["obs/cell_type/codes"].__setitem__(13, 9))
    with pytest.raises(InputError) as info:
        convert_h5ad(path, "bad", tmp_path / "out" / "chunks", {}, 4, 0, "zstd")
    assert str(info.value) == f"{path}: obs/cell_type: categorical code 9 out of range (3 categories)"


@pytest.mark.parametrize("reader", ["csr_parts", "chunks", "obs"])
def test_damaged_hdf5_chunk_is_an_input_error(tmp_path: Path, reader: str) -> None:
    """h5py's read error on a damaged compressed chunk becomes one line naming the element."""
    path = vintages.write_current(tmp_path / "bad.h5ad", vintages.distinct_counts(n_obs=40))
    vintages.rewrite_compressed(path, "X/data")
    vintages.rewrite_compressed(path, "obs/n_genes")
    vintages.damage_chunk(path, "X/data")
    vintages.damage_chunk(path, "obs/n_genes")
    with pytest.raises(InputError) as info, H5adSource(path) as source:
        if reader == "csr_parts":
            list(source.iter_csr_parts(8))
        elif reader == "chunks":
            list(source.iter_chunks(8))
        else:
            source.obs.read(0, 8)
    element = "obs/n_genes: cannot be read in rows 0-7" if reader == "obs" else "matrix X cannot be read in rows 0-7"
    assert str(info.value).startswith(f"{path}: {element} (")
    assert "\n" not in str(info.value)

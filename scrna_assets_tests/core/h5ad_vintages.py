"""Old on-disk h5ad layouts, written with h5py the way the old anndata versions wrote them.

anndata 0.12 still reads every one of them, so the tests use ``anndata.read_h5ad`` as the oracle.
Builders return the path they wrote. Nothing here is a test.

* ``write_anndata06``: anndata < 0.7 (scanpy 1.0-1.4 era): ``obs``/``var`` as one compound
  dataset (first field ``index``; categoricals stored as integer codes with their categories in
  ``uns/<col>_categories``), sparse matrices as h5sparse groups (``h5sparse_format`` /
  ``h5sparse_shape`` attributes, no ``encoding-type``), raw at the top-level keys ``raw.X``,
  ``raw.var``, ``raw.varm`` and ``raw.cat``; no encoding attributes on the root.
* ``write_anndata07``: anndata 0.7: ``dataframe`` 0.1.0 groups whose categoricals are codes
  datasets with a ``categories`` object reference into ``__categories``; plain column and index
  datasets without encoding attributes; ``csr_matrix``/``csc_matrix`` 0.1.0 groups; ``raw/`` group.
* ``modernise`` variants of a current file (``rewrite_*``): vlen-bytes or fixed-length index,
  empty ``column-order``, h5sparse attributes on an otherwise current file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

N_CELLS, N_GENES = 9, 6
GENES = ["GA", "GB", "GC", "GD", "GE", "GF"]
RAW_GENES = GENES + ["GG", "GH"]
STR = h5py.string_dtype()


def distinct_counts(n_obs: int = N_CELLS, n_vars: int = N_GENES, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """Counts whose non-zero values are distinct within each row (so every ranking is unique,
    whatever the tie rule); rows 0 and 4 are empty."""
    rng = np.random.default_rng(seed)
    matrix = np.zeros((n_obs, n_vars), dtype=np.float32)
    for row in range(n_obs):
        values = rng.permutation(n_vars).astype(np.float32) + 1
        values[rng.random(n_vars) < 0.35] = 0
        matrix[row] = values * scale
    matrix[[0, 4] if n_obs > 4 else [0]] = 0
    return matrix


def legacy_obs(n_obs: int = N_CELLS) -> pd.DataFrame:
    """The obs columns an old scanpy file typically has, with missing values where possible."""
    cycle = lambda values: [values[i % len(values)] for i in range(n_obs)]  # noqa: E731
    return pd.DataFrame(
        {
            "cell_type": pd.Categorical(cycle(["T cell", "B cell", None, "NK cell"]), categories=["B cell", "NK cell", "T cell"]),
            "development_stage": pd.Categorical(cycle(["30-year-old stage", "45-year-old stage"])),
            "batch": pd.Categorical(cycle(["b1", "b2", "b3"])),
            "barcode_note": [f"note-{i}" for i in range(n_obs)],
            "n_genes": np.arange(n_obs, dtype=np.int64) * 7,
            "percent_mito": np.array(cycle([0.5, np.nan, 2.25]), dtype=np.float32),
            "is_doublet": np.array(cycle([False, True, False]), dtype=bool),
        },
        index=[f"AAAC-{i}" for i in range(n_obs)],
    )


def gene_frame(names: list[str]) -> pd.DataFrame:
    cycle = lambda values: [values[i % len(values)] for i in range(len(names))]  # noqa: E731
    return pd.DataFrame(
        {
            "gene_ids": [f"ENSG{90000000000 + j:011d}" for j in range(len(names))],
            "feature_types": pd.Categorical(["Gene Expression"] * len(names)),
            "highly_variable": np.array(cycle([True, False]), dtype=bool),
        },
        index=names,
    )


# -- anndata < 0.7 ----------------------------------------------------------------------------
def _string_field(values: list[str], fixed: bool) -> tuple[np.ndarray, np.dtype]:
    if fixed:
        width = max([len(v.encode()) for v in values] + [1])
        return np.array([v.encode() for v in values], dtype=f"S{width}"), np.dtype(f"S{width}")
    return np.array(values, dtype=object), STR


def compound_frame(frame: pd.DataFrame, fixed_strings: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """anndata 0.6's ``df_to_records_fixed_width``: a structured array with the index as field
    ``index``, categoricals as codes (categories returned for ``uns/<col>_categories``)."""
    names, arrays, formats, categories = ["index"], [], [], {}
    values, dtype = _string_field([str(v) for v in frame.index], fixed_strings)
    arrays.append(values)
    formats.append(dtype)
    for name, series in frame.items():
        names.append(name)
        if isinstance(series.dtype, pd.CategoricalDtype):
            categories[name] = series.cat.categories.to_numpy()
            arrays.append(series.cat.codes.to_numpy())
            formats.append(arrays[-1].dtype)
        elif series.dtype == object:
            values, dtype = _string_field([str(v) for v in series], fixed_strings)
            arrays.append(values)
            formats.append(dtype)
        else:
            arrays.append(series.to_numpy())
            formats.append(arrays[-1].dtype)
    records = np.empty(len(frame), dtype=np.dtype({"names": names, "formats": formats}))
    for name, array in zip(names, arrays):
        records[name] = array
    return records, categories


def _categories_dataset(group: h5py.Group, key: str, categories: np.ndarray) -> None:
    if categories.dtype.kind in "OU":  # 0.6 wrote uns strings as fixed-length bytes
        group.create_dataset(key, data=np.array([str(c).encode() for c in categories]))
    else:
        group.create_dataset(key, data=categories)


def _h5sparse(group: h5py.Group, key: str, matrix: np.ndarray, fmt: str) -> None:
    """The h5sparse layout: ``data``/``indices``/``indptr`` plus ``h5sparse_format``/``_shape``."""
    if fmt == "dense":
        group.create_dataset(key, data=matrix)
        return
    stored = sp.csr_matrix(matrix) if fmt == "csr" else sp.csc_matrix(matrix)
    node = group.create_group(key)
    node.create_dataset("data", data=stored.data)
    node.create_dataset("indices", data=stored.indices)
    node.create_dataset("indptr", data=stored.indptr)
    node.attrs["h5sparse_format"] = fmt
    node.attrs["h5sparse_shape"] = np.array(matrix.shape)


def write_anndata06(
    path: Path,
    x: np.ndarray | None = None,
    x_format: str = "csr",
    obs: pd.DataFrame | None = None,
    var: pd.DataFrame | None = None,
    raw_x: np.ndarray | None = None,
    raw_format: str = "csr",
    raw_var: pd.DataFrame | None = None,
    fixed_strings: bool = False,
) -> Path:
    """An anndata < 0.7 file (see the module docstring). ``raw_x``: also a legacy raw."""
    x = distinct_counts() if x is None else x
    obs = legacy_obs(x.shape[0]) if obs is None else obs
    var = gene_frame(GENES[: x.shape[1]]) if var is None else var
    with h5py.File(path, "w") as handle:
        _h5sparse(handle, "X", x, x_format)
        uns = handle.create_group("uns")
        for key, frame in (("obs", obs), ("var", var)):
            records, categories = compound_frame(frame, fixed_strings)
            handle.create_dataset(key, data=records)
            for name, values in categories.items():
                _categories_dataset(uns, f"{name}_categories", values)
        uns.create_dataset("title", data=np.array([b"an old scanpy file"]))
        if raw_x is not None:
            raw_var = gene_frame(RAW_GENES[: raw_x.shape[1]]) if raw_var is None else raw_var
            _h5sparse(handle, "raw.X", raw_x, raw_format)
            records, categories = compound_frame(raw_var, fixed_strings)
            handle.create_dataset("raw.var", data=records)
            raw_cat = handle.create_group("raw.cat")
            for name, values in categories.items():
                _categories_dataset(raw_cat, f"{name}_categories", values)
            handle.create_group("raw.varm")
    return path


# -- anndata 0.7 ------------------------------------------------------------------------------
def _dataframe_010(parent: h5py.Group, key: str, frame: pd.DataFrame, fixed_index: bool = False) -> None:
    group = parent.create_group(key)
    group.attrs.update({"encoding-type": "dataframe", "encoding-version": "0.1.0", "_index": "_index"})
    group.attrs["column-order"] = np.array(list(frame.columns), dtype=object) if len(frame.columns) else np.array([])
    index, _ = _string_field([str(v) for v in frame.index], fixed_index)
    group.create_dataset("_index", data=index, dtype=None if fixed_index else STR)
    categories_group = None
    for name, series in frame.items():
        if isinstance(series.dtype, pd.CategoricalDtype):
            categories_group = categories_group or group.create_group("__categories")
            cats = series.cat.categories.to_numpy()
            cats_ds = categories_group.create_dataset(name, data=cats.astype(object) if cats.dtype.kind in "OU" else cats, dtype=STR if cats.dtype.kind in "OU" else None)
            cats_ds.attrs["ordered"] = bool(series.cat.ordered)
            codes = group.create_dataset(name, data=series.cat.codes.to_numpy())
            codes.attrs["categories"] = cats_ds.ref
        elif series.dtype == object:
            group.create_dataset(name, data=np.array([str(v) for v in series], dtype=object), dtype=STR)
        else:
            group.create_dataset(name, data=series.to_numpy())


def _sparse_010(parent: h5py.Group, key: str, matrix: np.ndarray, fmt: str) -> None:
    if fmt == "dense":
        parent.create_dataset(key, data=matrix)
        return
    stored = sp.csr_matrix(matrix) if fmt == "csr" else sp.csc_matrix(matrix)
    node = parent.create_group(key)
    node.attrs.update({"encoding-type": f"{fmt}_matrix", "encoding-version": "0.1.0", "shape": np.array(matrix.shape)})
    for name in ("data", "indices", "indptr"):
        node.create_dataset(name, data=getattr(stored, name))


def write_anndata07(
    path: Path,
    x: np.ndarray | None = None,
    x_format: str = "csr",
    obs: pd.DataFrame | None = None,
    var: pd.DataFrame | None = None,
    raw_x: np.ndarray | None = None,
    raw_format: str = "csr",
    raw_var: pd.DataFrame | None = None,
    fixed_index: bool = False,
) -> Path:
    """An anndata 0.7 file (see the module docstring). ``raw_x``: also a ``raw/`` group."""
    x = distinct_counts() if x is None else x
    obs = legacy_obs(x.shape[0]) if obs is None else obs
    var = gene_frame(GENES[: x.shape[1]]) if var is None else var
    with h5py.File(path, "w") as handle:
        _sparse_010(handle, "X", x, x_format)
        _dataframe_010(handle, "obs", obs, fixed_index)
        _dataframe_010(handle, "var", var, fixed_index)
        handle.create_group("uns")
        if raw_x is not None:
            raw = handle.create_group("raw")
            _sparse_010(raw, "X", raw_x, raw_format)
            _dataframe_010(raw, "var", gene_frame(RAW_GENES[: raw_x.shape[1]]) if raw_var is None else raw_var)
            raw.create_group("varm")
    return path


# -- current files, one element rewritten -----------------------------------------------------
def write_current(path: Path, x: np.ndarray | None = None, fmt: str = "csr", obs: pd.DataFrame | None = None, raw_x: np.ndarray | None = None) -> Path:
    x = distinct_counts() if x is None else x
    stored = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "dense": np.asarray}[fmt](x)
    adata = anndata.AnnData(X=stored, obs=legacy_obs(x.shape[0]) if obs is None else obs, var=gene_frame(GENES[: x.shape[1]]))
    if raw_x is not None:
        adata.raw = anndata.AnnData(X=sp.csr_matrix(raw_x), obs=adata.obs, var=gene_frame(RAW_GENES[: raw_x.shape[1]]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_h5ad(path)
    return path


def rewrite_h5sparse(path: Path, key: str = "X") -> Path:
    """Replace ``encoding-type``/``shape`` of a sparse group by the h5sparse attributes."""
    with h5py.File(path, "r+") as handle:
        node = handle[key]
        fmt = node.attrs["encoding-type"].removesuffix("_matrix")
        shape = np.array(node.attrs["shape"])
        for name in ("encoding-type", "encoding-version", "shape"):
            del node.attrs[name]
        node.attrs["h5sparse_format"] = np.bytes_(fmt)
        node.attrs["h5sparse_shape"] = shape
    return path


def rewrite_index(path: Path, kind: str, key: str = "obs") -> Path:
    """Store the dataframe index as ``vlen-bytes`` or ``fixed`` (S<n>) strings, still marked as
    ``string-array``."""
    with h5py.File(path, "r+") as handle:
        group = handle[key]
        name = group.attrs["_index"]
        values = [v.decode() if isinstance(v, bytes) else v for v in group[name][()]]
        attrs = dict(group[name].attrs)
        del group[name]
        if kind == "vlen-bytes":
            node = group.create_dataset(name, data=np.array([v.encode() for v in values], dtype=object), dtype=h5py.vlen_dtype(bytes))
        elif kind == "fixed":
            node = group.create_dataset(name, data=np.array([v.encode() for v in values]))
        else:
            raise ValueError(kind)
        node.attrs.update(attrs)
    return path


def rewrite_empty_column_order(path: Path, key: str = "obs") -> Path:
    """An empty ``column-order`` (float64, as h5py stores an empty list): the columns still on
    disk are not part of the dataframe."""
    with h5py.File(path, "r+") as handle:
        handle[key].attrs["column-order"] = np.array([], dtype=np.float64)
    return path


def write_nullable_columns(path: Path) -> Path:
    """A current file whose obs has nullable-integer, nullable-boolean and nullable-string-array
    columns with missing values, and a ``string-array`` column stored as vlen bytes."""
    x = distinct_counts()
    cycle = lambda values: [values[i % len(values)] for i in range(x.shape[0])]  # noqa: E731
    obs = legacy_obs(x.shape[0])
    obs["n_reads"] = pd.array(cycle([10, None, 30]), dtype="Int64")
    obs["passed_qc"] = pd.array(cycle([True, None, False]), dtype="boolean")
    write_current(path, x, obs=obs)
    with h5py.File(path, "r+") as handle:
        group = handle["obs"]
        with anndata.settings.override(allow_write_nullable_strings=True):
            anndata.io.write_elem(group, "donor_note", pd.array(cycle(["p", None, "q", "r"]), dtype="string"))
        order = [c.decode() if isinstance(c, bytes) else str(c) for c in group.attrs["column-order"]]
        group.attrs["column-order"] = np.array(order + ["donor_note"], dtype=object)
        values = [v.decode() for v in group["barcode_note"][()]]
        attrs = dict(group["barcode_note"].attrs)
        del group["barcode_note"]
        node = group.create_dataset("barcode_note", data=np.array([v.encode() for v in values], dtype=object), dtype=h5py.vlen_dtype(bytes))
        node.attrs.update(attrs)
    return path


def edit(path: Path, change) -> Path:
    """Apply ``change(handle)`` to the file opened read-write; returns the path."""
    with h5py.File(path, "r+") as handle:
        change(handle)
    return path


def add_obs_column(handle: h5py.File, name: str, data: np.ndarray, encoding: str | None = "array") -> None:
    """A dataset column appended to a current obs group's column-order."""
    group = handle["obs"]
    node = group.create_dataset(name, data=data)
    if encoding:
        node.attrs.update({"encoding-type": encoding, "encoding-version": "0.2.0"})
    order = [c.decode() if isinstance(c, bytes) else str(c) for c in np.atleast_1d(group.attrs["column-order"])]
    group.attrs["column-order"] = np.array(order + [name], dtype=object)


def damage_chunk(path: Path, key: str) -> Path:
    """Overwrite the middle of dataset ``key``'s first stored (compressed) chunk with garbage,
    so that reading it fails inside HDF5's deflate filter."""
    with h5py.File(path, "r") as handle:
        info = handle[key].id.get_chunk_info(0)
    with open(path, "r+b") as raw:
        raw.seek(info.byte_offset + info.size // 4)
        raw.write(b"\xff\x00" * max(4, info.size // 4))
    return path


def rewrite_compressed(path: Path, key: str) -> Path:
    """Store dataset ``key`` again, gzip-compressed in chunks of 4 entries (so one chunk can be damaged)."""
    with h5py.File(path, "r+") as handle:
        values = handle[key][()]
        attrs = dict(handle[key].attrs)
        del handle[key]
        node = handle.create_dataset(key, data=values, chunks=(4,) + values.shape[1:], compression="gzip")
        node.attrs.update(attrs)
    return path

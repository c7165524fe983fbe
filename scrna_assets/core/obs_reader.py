"""Read slices of AnnData ``obs`` columns straight from HDF5 as Arrow arrays.

Reading a slice per chunk keeps memory bounded by the chunk size: anndata would load whole
columns. Categoricals become strings, float NaN becomes null, so no "nan" strings appear.

Every obs layout that ``anndata.read_h5ad`` reads is read here, with anndata's values:

* a ``dataframe`` group, encoding 0.2.0 (current) or 0.1.0 (anndata 0.7: categoricals are codes
  datasets whose ``categories`` attribute points into ``__categories``), with columns that are
  ``array``/``string-array`` datasets (vlen str, vlen bytes or fixed-length strings), categoricals,
  ``nullable-integer``/``nullable-boolean``/``nullable-string-array`` groups; an empty
  ``column-order`` means no columns;
* a compound dataset (anndata < 0.7): the first field is the index, the others are columns; an
  integer column ``c`` with ``uns/c_categories`` is a categorical when all its codes are below
  the number of categories (anndata's ``_clean_uns`` rule), else it stays a number;
* a group without ``encoding-type``: anndata reads it as a dict of columns (all its members, in
  HDF5 order) with a ``0..n-1`` index;
* any column (or obs group) whose encoding is not one of the above is read once, whole, by
  ``anndata.io.read_elem`` (obs metadata is small) and then sliced.

What anndata cannot read either is refused with one ``InputError`` naming the element:
``obs/cell_type: categorical code 7 out of range (3 categories)``,
``obs: column-order names missing column 'x'``, ``obs: unknown encoding 'foo'``,
``obs/col: 2-D column (shape (9, 2))``, ``obs/col: has 5 rows, but obs has 9``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata
import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from scrna_assets.core.errors import InputError

_NULLABLE = ("nullable-integer", "nullable-boolean", "nullable-string-array")
_PLAIN = (None, "array", "string-array")


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _encoding(obj: h5py.Group | h5py.Dataset) -> str | None:
    value = obj.attrs.get("encoding-type")
    return None if value is None else _text(value)


def _strings(values: np.ndarray) -> pa.Array:
    """Decode an HDF5 string slice (bytes or str objects) to an Arrow string array."""
    if values.dtype.kind in ("S", "O"):
        decoded = [v.decode("utf-8") if isinstance(v, bytes) else v for v in values.tolist()]
        return pa.array(decoded, type=pa.string())
    return pa.array(values.astype(str), type=pa.string())


def _plain_array(values: np.ndarray) -> pa.Array:
    if values.dtype.kind in ("S", "O", "U"):
        return _strings(values)
    if values.dtype.kind == "f":
        return pa.array(values, from_pandas=True)  # NaN -> null
    return pa.array(values)


def _as_strings(values: pa.Array) -> pa.Array:
    return values if pa.types.is_string(values.type) else values.cast(pa.string())


def _shape_text(shape: tuple[int, ...]) -> str:
    return f"({shape[0]},)" if len(shape) == 1 else f"({', '.join(str(s) for s in shape)})"


def _quiet_read_elem(node: h5py.Group | h5py.Dataset) -> Any:
    with warnings.catch_warnings():  # old-format elements read fine; no need to warn
        warnings.simplefilter("ignore")
        return anndata.io.read_elem(node)


def _read_failure(error: Exception, encoding: str | None) -> str:
    if type(error).__name__ == "IORegistryError" and encoding is not None:
        return f"unknown encoding {encoding!r}"
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"cannot be read ({first})"


class _Column:
    """One obs column: ``read(start, stop)`` gives rows [start, stop) as an Arrow array."""

    def __init__(self, length: int, read: Callable[[int, int], pa.Array]) -> None:
        self.length = length
        self.read = read


class ObsReader:
    """Slices of every obs column and the obs index of one h5ad file.

    ``node`` is the file's ``obs`` element (a group, or a compound dataset in anndata < 0.7
    files); ``path`` names the file in error messages (default: the HDF5 file name).
    ``check_lengths=False`` leaves the check that every column has ``n_obs`` rows to a later
    ``check_lengths()`` (so a caller can first compare ``n_obs`` with the matrix)."""

    def __init__(self, node: h5py.Group | h5py.Dataset, path: str | Path | None = None, check_lengths: bool = True) -> None:
        self.group = node
        self.path = str(path) if path is not None else node.file.filename
        self.element = node.name.lstrip("/") or "obs"
        self.index_name: str | None = None
        self.columns: list[str] = []
        self._columns: dict[str, _Column] = {}
        self._index: Callable[[int, int], pa.Array]
        self._n_obs = 0
        encoding = None if isinstance(node, h5py.Dataset) else _encoding(node)
        if isinstance(node, h5py.Dataset):
            self._init_compound(node)
        elif encoding == "dataframe":
            self._init_dataframe(node)
        elif encoding is None:
            self._init_dict(node)
        else:
            self._init_anndata(node, encoding)
        if check_lengths:
            self.check_lengths()

    # -- layouts ---------------------------------------------------------------------------
    def _init_dataframe(self, group: h5py.Group) -> None:
        self.index_name = _text(group.attrs.get("_index", "_index"))
        index = group.get(self.index_name)
        if not isinstance(index, h5py.Dataset):
            raise self._error(f"has no index dataset {self.index_name!r}")
        if index.ndim != 1:
            raise self._error(f"{index.ndim}-D column (shape {_shape_text(index.shape)})", self.index_name)
        self._n_obs = int(index.shape[0])
        self._index = lambda start, stop: _strings(index[start:stop])
        order = group.attrs.get("column-order")
        if order is None:
            names = [k for k in group.keys() if k not in (self.index_name, "__categories")]
        else:
            names = [_text(c) for c in np.atleast_1d(order)]
        for name in names:
            if name not in group:
                raise self._error(f"column-order names missing column {name!r}")
            self._add(name, self._column(name, group[name]))

    def _init_dict(self, group: h5py.Group) -> None:
        """No encoding: anndata reads a dict of columns (every member) with a 0..n-1 index."""
        for name in group.keys():
            self._add(name, self._column(name, group[name]))
        lengths = {column.length for column in self._columns.values()}
        if len(lengths) > 1:
            raise self._error(f"columns of different lengths ({', '.join(str(n) for n in sorted(lengths))} rows) and no encoding-type")
        self._n_obs = lengths.pop() if lengths else 0
        self._index = lambda start, stop: pa.array([str(i) for i in range(start, stop)], type=pa.string())

    def _init_anndata(self, group: h5py.Group, encoding: str) -> None:
        """An encoding this reader does not know: whatever anndata reads as a dataframe."""
        try:
            frame = _quiet_read_elem(group)
        except Exception as error:  # anndata refuses it too: say why, in one line
            raise self._error(_read_failure(error, encoding)) from None
        if not isinstance(frame, pd.DataFrame):
            raise self._error(f"encoding {encoding!r} is not a dataframe")
        self._n_obs = len(frame)
        index = _as_strings(pa.array(frame.index.astype(str).to_numpy(dtype=object), type=pa.string()))
        self._index = lambda start, stop: index[start:stop]
        for name in frame.columns:
            self._add(str(name), self._loaded(str(name), frame[name].array))

    def _init_compound(self, dataset: h5py.Dataset) -> None:
        """anndata < 0.7: one structured dataset; categories in ``uns/<column>_categories``."""
        names = dataset.dtype.names
        if not names or dataset.ndim != 1:
            raise self._error(f"is a dataset of {dataset.dtype} with shape {_shape_text(dataset.shape)}, not a dataframe")
        self.index_name = names[0]
        self._n_obs = int(dataset.shape[0])
        self._index = lambda start, stop: _strings(np.asarray(dataset.fields(names[0])[start:stop]))
        uns = dataset.file.get("uns")
        for name in names[1:]:
            field_dtype = dataset.dtype.fields[name][0]
            element = f"{self.element}/{name}"
            if field_dtype.shape:
                shape = (self._n_obs, *field_dtype.shape)
                raise InputError(self.path, f"{len(shape)}-D column (shape {_shape_text(shape)})", element)
            if field_dtype.names:
                raise InputError(self.path, "compound column (a structured value per cell)", element)
            read = self._compound_field(dataset, name, element)
            categories = uns.get(f"{name}_categories") if isinstance(uns, h5py.Group) else None
            if categories is not None and field_dtype.kind in "iu":
                codes = np.asarray(dataset.fields(name)[()])
                cats = self._legacy_categories(categories)
                if cats is not None and (codes.size == 0 or int(codes.max()) < len(cats)):
                    self._check_codes(codes, len(cats), element)
                    self._add(name, self._categorical(element, self._n_obs, read, cats))
                    continue
            self._add(name, _Column(self._n_obs, lambda start, stop, read=read: _plain_array(read(start, stop))))

    # -- columns ---------------------------------------------------------------------------
    def _add(self, name: str, column: _Column) -> None:
        self.columns.append(name)
        self._columns[name] = column

    def check_lengths(self) -> None:
        """Every column must have as many rows as the index (anndata refuses the file otherwise)."""
        for name in self.columns:
            length = self._columns[name].length
            if length != self._n_obs:
                raise InputError(self.path, f"has {length} rows, but {self.element} has {self._n_obs}", f"{self.element}/{name}")

    def _column(self, name: str, node: h5py.Group | h5py.Dataset) -> _Column:
        element = f"{self.element}/{name}"
        encoding = _encoding(node)
        if isinstance(node, h5py.Dataset) and encoding in _PLAIN:
            if node.ndim != 1:
                raise InputError(self.path, f"{node.ndim}-D column (shape {_shape_text(node.shape)})", element)
            if node.dtype.names:
                raise InputError(self.path, "compound column (a structured value per cell)", element)
            if "categories" in node.attrs:  # anndata 0.7: codes + a reference into __categories
                try:
                    categories = node.parent[node.attrs["categories"]]
                except (KeyError, ValueError, TypeError, OSError):
                    raise InputError(self.path, "its categories reference points nowhere", element) from None
                return self._categorical(element, node.shape[0], self._slicer(node, element), self._categories(categories, element))
            return _Column(node.shape[0], self._plain_slicer(node, element))
        if isinstance(node, h5py.Group) and encoding == "categorical" and isinstance(node.get("codes"), h5py.Dataset):
            codes = node["codes"]
            if codes.ndim != 1:
                raise InputError(self.path, f"{codes.ndim}-D codes (shape {_shape_text(codes.shape)})", element)
            categories = node.get("categories")
            if categories is None:
                raise InputError(self.path, "categorical without categories", element)
            return self._categorical(element, codes.shape[0], self._slicer(codes, element), self._categories(categories, element))
        if (
            isinstance(node, h5py.Group)
            and encoding in _NULLABLE
            and isinstance(node.get("values"), h5py.Dataset)
            and isinstance(node.get("mask"), h5py.Dataset)
            and node["values"].ndim == 1
            and node["values"].shape == node["mask"].shape
        ):
            return _Column(node["values"].shape[0], self._nullable(node, encoding, element))
        return self._fallback(name, node, encoding)

    def _fallback(self, name: str, node: h5py.Group | h5py.Dataset, encoding: str | None) -> _Column:
        """An element this reader does not know: read whole by anndata (obs is small)."""
        element = f"{self.element}/{name}"
        try:
            values = _quiet_read_elem(node)
        except Exception as error:  # anndata cannot read it either
            raise InputError(self.path, _read_failure(error, encoding), element) from None
        return self._loaded(name, values)

    def _loaded(self, name: str, values: Any) -> _Column:
        array = self._to_arrow(values, f"{self.element}/{name}")
        return _Column(len(array), lambda start, stop: array[start:stop])

    def _to_arrow(self, values: Any, element: str) -> pa.Array:
        """anndata's in-memory value of a column as Arrow, with this module's conventions."""
        if isinstance(values, pd.Categorical):
            categories = _as_strings(self._to_arrow(values.categories.array, element))
            codes = np.asarray(values.codes, dtype=np.int64)
            return categories.take(pa.array(codes, mask=codes < 0))
        if isinstance(values, pd.api.extensions.ExtensionArray):
            return pa.array(values, from_pandas=True)
        if isinstance(values, np.ndarray) and values.dtype.names is None:
            if values.ndim != 1:
                raise InputError(self.path, f"{values.ndim}-D column (shape {_shape_text(values.shape)})", element)
            return _plain_array(values)
        raise InputError(self.path, f"cannot be read as a column (anndata gives {type(values).__name__})", element)

    def _categories(self, node: h5py.Group | h5py.Dataset, element: str) -> pa.Array:
        if isinstance(node, h5py.Dataset) and node.ndim == 1 and node.dtype.names is None:
            values = _plain_array(node[()])
        else:
            try:
                values = self._to_arrow(_quiet_read_elem(node), element)
            except InputError:
                raise
            except Exception as error:
                raise InputError(self.path, f"categories {_read_failure(error, _encoding(node))}", element) from None
        return _as_strings(values)

    def _legacy_categories(self, node: h5py.Group | h5py.Dataset) -> pa.Array | None:
        """``uns/<col>_categories`` as anndata reads it (a one-element string list becomes a
        scalar, which anndata wraps back into a list); None if it is not a list of values."""
        element = node.name.lstrip("/")
        try:
            value = _quiet_read_elem(node)
        except Exception as error:
            raise InputError(self.path, _read_failure(error, _encoding(node)), element) from None
        if isinstance(value, (str, int, np.str_, np.integer)):
            value = np.array([value])
        if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype.names:
            return None
        return _as_strings(_plain_array(value))

    def _categorical(self, element: str, length: int, read_codes: Callable[[int, int], np.ndarray], categories: pa.Array) -> _Column:
        n_categories = len(categories)

        def read(start: int, stop: int) -> pa.Array:
            codes = np.asarray(read_codes(start, stop)).astype(np.int64, copy=False)
            self._check_codes(codes, n_categories, element)
            return categories.take(pa.array(codes, mask=codes < 0))

        return _Column(length, read)

    def _check_codes(self, codes: np.ndarray, n_categories: int, element: str) -> None:
        if codes.size == 0:
            return
        low, high = int(codes.min()), int(codes.max())
        if high >= n_categories or low < -1:
            bad = high if high >= n_categories else low
            raise InputError(self.path, f"categorical code {bad} out of range ({n_categories} categories)", element)

    def _nullable(self, group: h5py.Group, encoding: str, element: str) -> Callable[[int, int], pa.Array]:
        values_ds, mask_ds = group["values"], group["mask"]

        def read(start: int, stop: int) -> pa.Array:
            values = self._read(values_ds, start, stop, element)
            mask = self._read(mask_ds, start, stop, element).astype(bool)
            array = _strings(values) if encoding == "nullable-string-array" else pa.array(values)
            return pc.if_else(pa.array(mask), pa.scalar(None, array.type), array) if mask.any() else array

        return read

    def _slicer(self, dataset: h5py.Dataset, element: str) -> Callable[[int, int], np.ndarray]:
        return lambda start, stop: self._read(dataset, start, stop, element)

    def _plain_slicer(self, dataset: h5py.Dataset, element: str) -> Callable[[int, int], pa.Array]:
        return lambda start, stop: _plain_array(self._read(dataset, start, stop, element))

    def _compound_field(self, dataset: h5py.Dataset, name: str, element: str) -> Callable[[int, int], np.ndarray]:
        def read(start: int, stop: int) -> np.ndarray:
            try:
                return np.asarray(dataset.fields(name)[start:stop])
            except OSError as error:
                raise InputError(self.path, f"cannot be read in rows {start}-{stop - 1} ({error})", element) from None

        return read

    def _read(self, dataset: h5py.Dataset, start: int, stop: int, element: str) -> np.ndarray:
        try:
            return dataset[start:stop]
        except OSError as error:  # a damaged HDF5 chunk: name the element, not h5py
            raise InputError(self.path, f"cannot be read in rows {start}-{stop - 1} ({error})", element) from None

    def _error(self, problem: str, member: str | None = None) -> InputError:
        return InputError(self.path, problem, self.element if member is None else f"{self.element}/{member}")

    # -- reading ---------------------------------------------------------------------------
    @property
    def n_obs(self) -> int:
        return self._n_obs

    def index(self, start: int, stop: int) -> pa.Array:
        return self._index(start, stop)

    def column(self, name: str, start: int, stop: int) -> pa.Array:
        return self._columns[name].read(start, stop)

    def read(self, start: int, stop: int) -> dict[str, pa.Array]:
        """All obs columns for rows [start, stop), in the file's column order."""
        return {name: self._columns[name].read(start, stop) for name in self.columns}

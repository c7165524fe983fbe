"""Read slices of AnnData ``obs`` columns straight from HDF5 as Arrow arrays.

Reading a slice per chunk keeps memory bounded by the chunk size: anndata would load whole
columns. Categoricals become strings, float NaN becomes null, so no "nan" strings appear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _encoding(obj: h5py.Group | h5py.Dataset) -> str | None:
    value = obj.attrs.get("encoding-type")
    return value.decode() if isinstance(value, bytes) else value


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


@dataclass
class ObsReader:
    """Slices of every obs column and the obs index of one h5ad file."""

    group: h5py.Group
    index_name: str = field(init=False)
    columns: list[str] = field(init=False)
    _categories: dict[str, pa.Array] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        index_attr = self.group.attrs.get("_index", "_index")
        self.index_name = index_attr.decode() if isinstance(index_attr, bytes) else str(index_attr)
        order = self.group.attrs.get("column-order")
        if order is None:
            names = [k for k in self.group.keys() if k not in (self.index_name, "__categories")]
        else:
            names = [c.decode() if isinstance(c, bytes) else str(c) for c in np.atleast_1d(order)]
        self.columns = names

    @property
    def n_obs(self) -> int:
        return int(self.group[self.index_name].shape[0])

    def index(self, start: int, stop: int) -> pa.Array:
        return _strings(self.group[self.index_name][start:stop])

    def column(self, name: str, start: int, stop: int) -> pa.Array:
        obj = self.group[name]
        encoding = _encoding(obj)
        if encoding == "categorical":
            return self._categorical(name, obj["codes"][start:stop])
        if encoding in ("nullable-integer", "nullable-boolean", "nullable-string-array"):
            values = obj["values"][start:stop]
            mask = obj["mask"][start:stop].astype(bool)
            array = _strings(values) if encoding == "nullable-string-array" else pa.array(values)
            return pc.if_else(pa.array(mask), pa.scalar(None, array.type), array) if mask.any() else array
        if isinstance(obj, h5py.Dataset) and "categories" in obj.attrs:  # anndata < 0.7 layout
            return self._categorical(name, obj[start:stop], obj.file[obj.attrs["categories"]])
        return _plain_array(obj[start:stop])

    def _categorical(self, name: str, codes: np.ndarray, categories: Any = None) -> pa.Array:
        if name not in self._categories:
            source = categories if categories is not None else self.group[name]["categories"]
            cats = _plain_array(source[()])
            self._categories[name] = cats if pa.types.is_string(cats.type) else cats.cast(pa.string())
        codes = codes.astype(np.int64)
        return self._categories[name].take(pa.array(codes, mask=codes < 0))

    def read(self, start: int, stop: int) -> dict[str, pa.Array]:
        """All obs columns for rows [start, stop), in the file's column order."""
        return {name: self.column(name, start, stop) for name in self.columns}

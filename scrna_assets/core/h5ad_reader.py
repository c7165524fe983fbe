"""Open an h5ad file read-only and stream its count matrix in row chunks.

The file is read through h5py slices, never loaded whole: CSR rows are contiguous, dense rows are
read in bounded blocks, and CSC is regrouped by row chunk through spill files in one pass.

``iter_csr_parts`` is the conversion's hot path: CSR rows are read straight into buffers reused
from chunk to chunk (``read_direct``), so a terabyte file costs no fresh allocation per chunk.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anndata
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scrna_assets.core.errors import InputError
from scrna_assets.core.obs_reader import ObsReader

MATRIX_CHOICES = ("auto", "raw.X", "counts", "X")
_MATRIX_PATHS = {"raw.X": "raw/X", "counts": "layers/counts", "X": "X"}
_DENSE_BLOCK_VALUES = 16_000_000  # ~128 MB of float64 per dense read
_CSC_BLOCK_VALUES = 8_000_000  # non-zeros per CSC column block
# HDF5 chunk cache per open dataset: big enough for the compressed HDF5 chunk that straddles two
# row chunks to stay cached between them (not decompressed twice; the default, 1 MB, is too small
# for some writers' chunks), small because every other chunk is read once.
CHUNK_CACHE_BYTES = 4 * 1024 * 1024
_CHUNK_CACHE_SLOTS = 1_009  # a prime, as HDF5 advises


@dataclass(frozen=True)
class CsrPart:
    """Rows [start, stop) as CSR arrays: ``indptr`` starts at 0; ``indices``/``data`` hold at least
    ``indptr[-1]`` entries. From ``iter_csr_parts`` they may be buffers the next chunk overwrites."""

    start: int
    stop: int
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray


@dataclass(frozen=True)
class MatrixChunk:
    """Rows [start, stop) of the chosen matrix as CSR."""

    start: int
    stop: int
    matrix: sp.csr_matrix


def _encoding(obj: h5py.Group | h5py.Dataset) -> str | None:
    value = obj.attrs.get("encoding-type")
    return value.decode() if isinstance(value, bytes) else value


class H5adSource:
    """One h5ad file opened for streaming. Use as a context manager."""

    def __init__(self, path: str | Path, matrix: str = "auto") -> None:
        self.path = Path(path)
        if matrix not in MATRIX_CHOICES:
            raise ValueError(f"--matrix must be one of {', '.join(MATRIX_CHOICES)}, not {matrix!r}")
        try:
            self.file = h5py.File(self.path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES, rdcc_nslots=_CHUNK_CACHE_SLOTS)
        except (OSError, ValueError) as error:
            raise InputError(self.path, f"cannot be opened as HDF5/h5ad ({error})") from error
        try:
            self.matrix_name = self._choose_matrix(matrix)
            self.matrix_node = self.file[_MATRIX_PATHS[self.matrix_name]]
            self.encoding = self._matrix_encoding()
            self.n_obs, self.n_vars = self._shape()
            self.obs = self._obs_reader()
        except Exception:
            self.file.close()
            raise

    def __enter__(self) -> H5adSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    # -- structure -------------------------------------------------------------------------
    def _choose_matrix(self, requested: str) -> str:
        if requested != "auto":
            if _MATRIX_PATHS[requested] not in self.file:
                raise InputError(self.path, f"has no matrix {requested} (asked for with --matrix)")
            return requested
        for name in ("raw.X", "counts", "X"):
            if _MATRIX_PATHS[name] in self.file:
                return name
        raise InputError(self.path, "has no count matrix (no raw.X, no layers['counts'], no X)")

    def _matrix_encoding(self) -> str:
        node = self.matrix_node
        if isinstance(node, h5py.Dataset):
            return "dense"
        encoding = _encoding(node) or ""
        if encoding in ("csr_matrix", "csc_matrix"):
            return encoding[:3]
        raise InputError(self.path, f"matrix {self.matrix_name} has unsupported encoding {encoding!r}")

    def _shape(self) -> tuple[int, int]:
        node = self.matrix_node
        if isinstance(node, h5py.Dataset):
            if node.ndim != 2:
                raise InputError(self.path, f"matrix {self.matrix_name} is not two-dimensional")
            return int(node.shape[0]), int(node.shape[1])
        shape = node.attrs.get("shape", node.attrs.get("h5sparse_shape"))
        if shape is None:
            raise InputError(self.path, f"matrix {self.matrix_name} has no shape attribute")
        return int(shape[0]), int(shape[1])

    def _obs_reader(self) -> ObsReader:
        if "obs" not in self.file or not isinstance(self.file["obs"], h5py.Group):
            raise InputError(self.path, "has no obs dataframe (not an AnnData file)")
        reader = ObsReader(self.file["obs"])
        if reader.n_obs != self.n_obs:
            raise InputError(
                self.path, f"obs has {reader.n_obs} rows but matrix {self.matrix_name} has {self.n_obs}"
            )
        return reader

    def read_var(self) -> pd.DataFrame:
        """The var table that belongs to the chosen matrix (raw.var for raw.X). Small: genes only."""
        key = "raw/var" if self.matrix_name == "raw.X" else "var"
        if key not in self.file:
            raise InputError(self.path, f"has no {key.replace('/', '.')} table")
        with warnings.catch_warnings():  # old-format var (e.g. 10x exports) reads fine; no need to warn
            warnings.simplefilter("ignore", anndata.OldFormatWarning)
            var = anndata.io.read_elem(self.file[key])
        if len(var) != self.n_vars:
            raise InputError(
                self.path, f"{key.replace('/', '.')} has {len(var)} rows but matrix {self.matrix_name} has {self.n_vars} columns"
            )
        return var

    # -- streaming -------------------------------------------------------------------------
    def iter_chunks(self, chunk_size: int, spill_dir: Path | None = None) -> Iterator[MatrixChunk]:
        """Yield validated CSR row chunks of at most ``chunk_size`` rows."""
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if self.encoding == "csr":
            chunks = self._iter_csr(chunk_size)
        elif self.encoding == "dense":
            chunks = self._iter_dense(chunk_size)
        else:
            chunks = self._iter_csc(chunk_size, spill_dir)
        for chunk in chunks:
            self._validate(chunk)
            yield chunk

    def iter_csr_parts(self, chunk_size: int, spill_dir: Path | None = None) -> Iterator[CsrPart]:
        """Like ``iter_chunks`` but as plain CSR arrays; for CSR input they are buffers reused by
        the next chunk, so use (or copy) a part before asking for the next one."""
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if self.encoding != "csr":
            for chunk in self.iter_chunks(chunk_size, spill_dir):
                m = chunk.matrix
                yield CsrPart(chunk.start, chunk.stop, m.indptr, m.indices, m.data)
            return
        node = self.matrix_node
        indptr_ds, indices_ds, data_ds = node["indptr"], node["indices"], node["data"]
        # native byte order (HDF5 converts while reading): the compiled kernels need it
        indices_dtype, data_dtype = indices_ds.dtype.newbyteorder("="), data_ds.dtype.newbyteorder("=")
        indices_buffer = np.empty(0, dtype=indices_dtype)
        data_buffer = np.empty(0, dtype=data_dtype)
        for start in range(0, self.n_obs, chunk_size):
            stop = min(start + chunk_size, self.n_obs)
            indptr = indptr_ds[start : stop + 1].astype(np.int64)
            lo, hi = int(indptr[0]), int(indptr[-1])
            n = hi - lo
            if n < 0 or np.any(np.diff(indptr) < 0) or hi > data_ds.shape[0] or hi > indices_ds.shape[0]:
                raise InputError(self.path, f"matrix {self.matrix_name} has a broken indptr in rows {start}-{stop - 1}")
            if data_buffer.size < n:  # grow with headroom, so similar chunks never reallocate
                size = max(n, int(data_buffer.size * 1.1))
                data_buffer = np.empty(size, dtype=data_dtype)
                indices_buffer = np.empty(size, dtype=indices_dtype)
            if n:
                data_ds.read_direct(data_buffer, np.s_[lo:hi], np.s_[0:n])
                indices_ds.read_direct(indices_buffer, np.s_[lo:hi], np.s_[0:n])
            self._check_values(data_buffer[:n], start, stop)
            yield CsrPart(start, stop, indptr - lo, indices_buffer, data_buffer)

    def _validate(self, chunk: MatrixChunk) -> None:
        self._check_values(chunk.matrix.data, chunk.start, chunk.stop)

    def _check_values(self, data: np.ndarray, start: int, stop: int) -> None:
        """Refuse NaN, infinities and negative values. Two reductions, no temporary arrays:
        a NaN makes the minimum NaN, an infinity shows in the minimum or the maximum."""
        if data.size == 0:
            return
        low, high = data.min(), data.max()
        if data.dtype.kind == "f" and not (np.isfinite(low) and np.isfinite(high)):
            raise InputError(self.path, f"matrix {self.matrix_name} has non-finite values (NaN or inf) in rows {start}-{stop - 1}")
        if low < 0:
            raise InputError(self.path, f"matrix {self.matrix_name} has negative values in rows {start}-{stop - 1}: counts must be >= 0")

    def _iter_csr(self, chunk_size: int) -> Iterator[MatrixChunk]:
        node = self.matrix_node
        indptr_ds, indices_ds, data_ds = node["indptr"], node["indices"], node["data"]
        for start in range(0, self.n_obs, chunk_size):
            stop = min(start + chunk_size, self.n_obs)
            indptr = indptr_ds[start : stop + 1].astype(np.int64)
            lo, hi = int(indptr[0]), int(indptr[-1])
            matrix = sp.csr_matrix(
                (data_ds[lo:hi], indices_ds[lo:hi], indptr - lo), shape=(stop - start, self.n_vars)
            )
            yield MatrixChunk(start, stop, matrix)

    def _iter_dense(self, chunk_size: int) -> Iterator[MatrixChunk]:
        node = self.matrix_node
        block_rows = max(1, _DENSE_BLOCK_VALUES // max(1, self.n_vars))
        for start in range(0, self.n_obs, chunk_size):
            stop = min(start + chunk_size, self.n_obs)
            blocks = [
                sp.csr_matrix(node[row : min(row + block_rows, stop)])
                for row in range(start, stop, block_rows)
            ]
            matrix = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, self.n_vars))
            yield MatrixChunk(start, stop, matrix)

    def _iter_csc(self, chunk_size: int, spill_dir: Path | None) -> Iterator[MatrixChunk]:
        """One pass over the columns, spilling (row, col, value) to one file per row chunk."""
        node = self.matrix_node
        indptr = node["indptr"]
        n_chunks = -(-self.n_obs // chunk_size)
        workdir = Path(tempfile.mkdtemp(prefix="csc-spill-", dir=spill_dir))
        value_dtype = node["data"].dtype
        try:
            files = [open(workdir / f"{k}.bin", "wb") for k in range(n_chunks)]
            try:
                col = 0
                while col < self.n_vars:
                    col_end = col + 1
                    base = int(indptr[col])
                    while col_end < self.n_vars and int(indptr[col_end + 1]) - base <= _CSC_BLOCK_VALUES:
                        col_end += 1
                    ptr = indptr[col : col_end + 1].astype(np.int64)
                    rows = node["indices"][ptr[0] : ptr[-1]].astype(np.int64)
                    cols = np.repeat(np.arange(col, col_end, dtype=np.int64), np.diff(ptr))
                    values = node["data"][ptr[0] : ptr[-1]].astype(value_dtype)
                    chunk_ids = rows // chunk_size
                    order = np.argsort(chunk_ids, kind="stable")
                    bounds = np.searchsorted(chunk_ids[order], np.arange(n_chunks + 1))
                    for k in np.unique(chunk_ids):
                        sel = order[bounds[k] : bounds[k + 1]]
                        record = np.empty(len(sel), dtype=[("r", "<i8"), ("c", "<i8"), ("v", value_dtype)])
                        record["r"], record["c"], record["v"] = rows[sel], cols[sel], values[sel]
                        files[k].write(record.tobytes())
                    col = col_end
            finally:
                for handle in files:
                    handle.close()
            record_dtype = np.dtype([("r", "<i8"), ("c", "<i8"), ("v", value_dtype)])
            for k in range(n_chunks):
                start, stop = k * chunk_size, min((k + 1) * chunk_size, self.n_obs)
                records = np.fromfile(workdir / f"{k}.bin", dtype=record_dtype)
                (workdir / f"{k}.bin").unlink()
                matrix = sp.coo_matrix(
                    (records["v"], (records["r"] - start, records["c"])), shape=(stop - start, self.n_vars)
                ).tocsr()
                yield MatrixChunk(start, stop, matrix)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

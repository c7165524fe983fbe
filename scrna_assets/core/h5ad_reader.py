"""Open an h5ad file read-only and stream its count matrix in row chunks.

The file is read through h5py slices, never loaded whole: CSR rows are contiguous, dense rows are
read in bounded blocks, and CSC is regrouped by row chunk through spill files in one pass.

The rule: what ``anndata.read_h5ad(path, backed="r")`` reads, this reads, with the same values.
Besides the current encodings that covers anndata 0.7 files (``dataframe`` 0.1.0) and anndata
< 0.7 files: obs/var as compound datasets (``obs_reader``), raw at the top-level keys ``raw.X`` /
``raw.var``, sparse groups marked by ``h5sparse_format``/``h5sparse_shape``. A sparse group with
any other marking is recognised by ``anndata.io.sparse_dataset`` and read in row blocks.

``iter_csr_parts`` is the conversion's hot path: CSR rows are read straight into buffers reused
from chunk to chunk (``read_direct``), so a terabyte file costs no fresh allocation per chunk.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anndata
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scrna_assets.core.errors import InputError
from scrna_assets.core.obs_reader import ObsReader, _read_failure

MATRIX_CHOICES = ("auto", "raw.X", "counts", "X")
UNS_FACTS = ("title", "citation", "schema_version", "organism", "organism_ontology_term_id")
# where each matrix may be stored, current layout first (anndata < 0.7 wrote raw at top-level keys)
_MATRIX_PATHS = {"raw.X": ("raw/X", "raw.X"), "counts": ("layers/counts",), "X": ("X",)}
_VAR_PATHS = {"raw/X": "raw/var", "raw.X": "raw.var"}
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


def _scipy_values(values: np.ndarray) -> np.ndarray:
    """``values`` in a dtype scipy.sparse holds: float16 (which it does not) as float32, exact."""
    return values.astype(np.float32) if values.dtype == np.float16 else values


def _attr(obj: h5py.Group | h5py.Dataset, name: str) -> str | None:
    value = obj.attrs.get(name)
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _encoding(obj: h5py.Group | h5py.Dataset) -> str | None:
    return _attr(obj, "encoding-type")


def _sparse_format(group: h5py.Group) -> str | None:
    """``csr``/``csc`` as anndata's ``sparse_dataset`` reads a group's format: the pre-0.7
    ``h5sparse_format`` attribute first, else ``encoding-type`` without ``_matrix``."""
    fmt = _attr(group, "h5sparse_format")
    if fmt is None:
        fmt = (_attr(group, "encoding-type") or "").replace("_matrix", "")
    return fmt if fmt in ("csr", "csc") else None


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
            self.matrix_name, self.matrix_path = self._choose_matrix(matrix)
            self.matrix_node = self.file[self.matrix_path]
            self._backed = None  # anndata's backed matrix, for sparse groups only anndata recognises
            self.encoding = self._matrix_encoding()
            self.integer_values = True
            """Every value read so far is a whole number (count data); False from the first that is not."""
            self.n_obs, self.n_vars = self._shape()
            self._check_structure()
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
    def _choose_matrix(self, requested: str) -> tuple[str, str]:
        names = ("raw.X", "counts", "X") if requested == "auto" else (requested,)
        for name in names:
            for key in _MATRIX_PATHS[name]:
                if key in self.file:
                    return name, key
        if requested != "auto":
            raise InputError(self.path, f"has no matrix {requested} (asked for with --matrix)")
        raise InputError(self.path, "has no count matrix (no raw.X, no layers['counts'], no X)")

    def _matrix_encoding(self) -> str:
        node = self.matrix_node
        if isinstance(node, h5py.Dataset):  # anndata's backed mode reads any 2-D dataset as dense
            if node.dtype.kind not in "biuf":
                raise InputError(self.path, f"matrix {self.matrix_name} holds {node.dtype} values, not numbers")
            return "dense"
        fmt = _sparse_format(node)
        if fmt is not None:
            missing = [k for k in ("data", "indices", "indptr") if not isinstance(node.get(k), h5py.Dataset)]
            if missing:
                raise InputError(self.path, f"matrix {self.matrix_name} ({fmt}) has no {', '.join(missing)} array")
            return fmt
        # a marking this reader does not know: if anndata (a later version, say) recognises it as
        # a sparse matrix, read anndata's backed matrix in row blocks
        encoding = _encoding(node) or ""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                backed = anndata.io.sparse_dataset(node)
                fmt = backed.format
        except Exception:
            raise InputError(self.path, f"matrix {self.matrix_name} has unsupported encoding {encoding!r}") from None
        if fmt != "csr":  # row blocks of anndata's backed CSC would each read the whole matrix
            raise InputError(self.path, f"matrix {self.matrix_name} has unsupported encoding {encoding!r}")
        self._backed = backed
        return "csr-anndata"

    def _shape(self) -> tuple[int, int]:
        node = self.matrix_node
        if isinstance(node, h5py.Dataset):
            if node.ndim != 2:
                raise InputError(self.path, f"matrix {self.matrix_name} is not two-dimensional")
            return int(node.shape[0]), int(node.shape[1])
        if self._backed is not None:
            return tuple(int(n) for n in self._backed.shape)
        shape = node.attrs.get("shape", node.attrs.get("h5sparse_shape"))
        if shape is None or np.shape(shape) != (2,):
            raise InputError(self.path, f"matrix {self.matrix_name} has no shape attribute")
        return int(shape[0]), int(shape[1])

    def _check_structure(self) -> None:
        """A sparse group's three arrays must fit its shape (cheap: metadata only)."""
        if self.encoding not in ("csr", "csc"):
            return
        node = self.matrix_node
        major = self.n_obs if self.encoding == "csr" else self.n_vars
        indptr, indices, data = node["indptr"], node["indices"], node["data"]
        if indptr.shape != (major + 1,):
            raise InputError(
                self.path, f"matrix {self.matrix_name} has a broken indptr ({indptr.shape[0] if indptr.ndim else 0} entries for {major} {'rows' if self.encoding == 'csr' else 'columns'})"
            )
        if data.dtype.kind not in "biuf":
            raise InputError(self.path, f"matrix {self.matrix_name} holds {data.dtype} values, not numbers")
        if indices.dtype.kind not in "iu":
            raise InputError(self.path, f"matrix {self.matrix_name} holds {indices.dtype} indices, not integers")
        if indices.ndim != 1 or data.ndim != 1 or indices.shape != data.shape:
            raise InputError(
                self.path, f"matrix {self.matrix_name} has indices and data of different lengths ({indices.size} and {data.size})"
            )

    @property
    def value_dtype(self) -> str:
        """The stored dtype of the chosen matrix's values."""
        if self._backed is not None:
            return str(self._backed.dtype)
        node = self.matrix_node
        return str((node if isinstance(node, h5py.Dataset) else node["data"]).dtype)

    def uns_facts(self) -> dict[str, str]:
        """Dataset-wide text facts CELLxGENE keeps in ``uns`` (title, citation, schema version,
        organism), for the dataset card; absent or non-text entries are left out. A one-element
        fixed-length string array counts as its element (anndata < 0.7 wrote strings so, and
        anndata reads them so)."""
        facts = {}
        uns = self.file.get("uns")
        for key in UNS_FACTS:
            node = uns.get(key) if isinstance(uns, h5py.Group) else None
            if not isinstance(node, h5py.Dataset) or node.dtype.kind not in "OSU":
                continue
            if node.shape == ():
                value = node[()]
            elif node.shape == (1,) and node.dtype.kind == "S":
                value = node[0]
            else:
                continue
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            if text.strip():
                facts[key] = text.strip()
        return facts

    def _obs_reader(self) -> ObsReader:
        node = self.file.get("obs")
        if not isinstance(node, (h5py.Group, h5py.Dataset)):
            raise InputError(self.path, "has no obs dataframe (not an AnnData file)")
        reader = ObsReader(node, self.path, check_lengths=False)
        if reader.n_obs != self.n_obs:
            raise InputError(
                self.path, f"obs has {reader.n_obs} rows but matrix {self.matrix_name} has {self.n_obs}"
            )
        reader.check_lengths()
        return reader

    def read_var(self) -> pd.DataFrame:
        """The var table that belongs to the chosen matrix (raw.var for raw.X). Small: genes only.
        Read by anndata's own readers, so its values are anndata's (a pre-0.7 compound var gets
        its categories from ``uns`` as anndata does; a pre-0.7 ``raw.var`` keeps integer codes,
        as anndata keeps them)."""
        key = _VAR_PATHS.get(self.matrix_path, "var")
        shown = key.replace("/", ".")
        node = self.file.get(key)
        if node is None:
            raise InputError(self.path, f"has no {shown} table")
        try:
            with warnings.catch_warnings():  # old-format var (e.g. 10x exports) reads fine; no need to warn
                warnings.simplefilter("ignore")
                if isinstance(node, h5py.Dataset):  # anndata < 0.7: a compound dataset
                    from anndata._io.h5ad import read_dataframe

                    var = read_dataframe(node)
                    if key == "var" and isinstance(self.file.get("obs"), h5py.Dataset):
                        self._legacy_var_categories(var)
                else:
                    var = anndata.io.read_elem(node)
                    if isinstance(var, dict):  # a group without encoding-type: anndata makes a frame of it
                        var = pd.DataFrame(var)
        except InputError:
            raise
        except Exception as error:  # anndata cannot read it either
            raise InputError(self.path, _read_failure(error, _encoding(node)), shown) from None
        if not isinstance(var, pd.DataFrame):
            raise InputError(self.path, f"is not a dataframe ({type(var).__name__})", shown)
        if len(var) != self.n_vars:
            raise InputError(
                self.path, f"{shown} has {len(var)} rows but matrix {self.matrix_name} has {self.n_vars} columns"
            )
        return var

    def _legacy_var_categories(self, var: pd.DataFrame) -> None:
        """anndata's ``_clean_uns``: an integer var column ``c`` with ``uns/c_categories`` becomes
        a categorical when all its codes are below the number of categories."""
        uns = self.file.get("uns")
        if not isinstance(uns, h5py.Group):
            return
        for name in var.columns:
            node = uns.get(f"{name}_categories")
            codes = var[name].to_numpy()
            if node is None or codes.dtype.kind not in "iu":
                continue
            categories = anndata.io.read_elem(node)
            if isinstance(categories, (str, int, np.str_, np.integer)):
                categories = [categories]
            if not np.all(codes < len(categories)):
                continue
            if codes.size and codes.min() < -1:
                bad = int(codes.min())
                raise InputError(self.path, f"categorical code {bad} out of range ({len(categories)} categories)", f"var/{name}")
            var[name] = pd.Categorical.from_codes(codes, categories)

    # -- streaming -------------------------------------------------------------------------
    def iter_chunks(self, chunk_size: int, spill_dir: Path | None = None) -> Iterator[MatrixChunk]:
        """Yield validated CSR row chunks of at most ``chunk_size`` rows."""
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if self.encoding == "csr":
            chunks = self._iter_csr(chunk_size)
        elif self.encoding == "csr-anndata":
            chunks = self._iter_backed(chunk_size)
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
            with self._reading("rows", start, stop):
                indptr = indptr_ds[start : stop + 1].astype(np.int64)
            self._check_indptr(indptr, start, indices_ds.shape[0])
            lo, hi = int(indptr[0]), int(indptr[-1])
            n = hi - lo
            if data_buffer.size < n:  # grow with headroom, so similar chunks never reallocate
                size = max(n, int(data_buffer.size * 1.1))
                data_buffer = np.empty(size, dtype=data_dtype)
                indices_buffer = np.empty(size, dtype=indices_dtype)
            if n:
                with self._reading("rows", start, stop):
                    data_ds.read_direct(data_buffer, np.s_[lo:hi], np.s_[0:n])
                    indices_ds.read_direct(indices_buffer, np.s_[lo:hi], np.s_[0:n])
            indptr -= lo
            self._check_indices(indices_buffer[:n], indptr, start)
            self._check_values(data_buffer[:n], start, stop)
            yield CsrPart(start, stop, indptr, indices_buffer, data_buffer)

    @contextmanager
    def _reading(self, axis: str, start: int, stop: int) -> Iterator[None]:
        """h5py's read errors (a damaged chunk, a failed filter) as one InputError line."""
        try:
            yield
        except OSError as error:
            raise InputError(self.path, f"matrix {self.matrix_name} cannot be read in {axis} {start}-{stop - 1} ({error})") from None

    def _validate(self, chunk: MatrixChunk) -> None:
        self._check_values(chunk.matrix.data, chunk.start, chunk.stop)

    # Malformed CSR is what scipy's ``check_format(full_check=True)`` rejects: ``indptr`` not
    # starting at 0, decreasing, or not ending at nnz (the length of indices and data, equal:
    # ``_check_structure``); a column index outside [0, n_vars). Checked chunk by chunk (chunks
    # share their boundary indptr entry, so the whole indptr is covered) with a few reductions;
    # the first offending row is named. A column stored twice in a row is valid (its values sum).
    def _malformed(self, row: int, problem: str) -> InputError:
        return InputError(self.path, f"matrix {self.matrix_name}: row {row}: {problem}")

    def _check_indptr(self, indptr: np.ndarray, start: int, nnz: int) -> None:
        """``indptr`` (int64): the file's entries ``start .. start + rows``."""
        if start == 0 and indptr[0] != 0:
            raise self._malformed(0, f"indptr starts at {int(indptr[0])}, not 0")
        last = start + len(indptr) - 1 == self.n_obs
        steps = np.diff(indptr)
        down = int(np.flatnonzero(steps < 0)[0]) if steps.size and steps.min() < 0 else len(indptr)
        past = int(np.flatnonzero(indptr > nnz)[0]) - 1 if indptr.max() > nnz else len(indptr)
        if past <= down and past < len(indptr) and not (last and past == len(indptr) - 2):  # the earlier row first
            raise self._malformed(start + past, f"indptr {int(indptr[past + 1])} is past nnz {nnz}")
        if down < past:
            raise self._malformed(start + down, f"indptr decreases ({int(indptr[down])} -> {int(indptr[down + 1])})")
        if last and indptr[-1] != nnz:
            raise self._malformed(self.n_obs - 1, f"indptr ends at {int(indptr[-1])}, not at nnz {nnz}")

    def _check_indices(self, indices: np.ndarray, indptr: np.ndarray, start: int) -> None:
        """The chunk's column indices (``indptr`` from 0) are in [0, n_vars): one reduction, the
        largest read as unsigned (a negative index reads as a huge one)."""
        if indices.size == 0:
            return
        unsigned = indices.view(indices.dtype.str.replace("i", "u")) if indices.dtype.kind == "i" else indices
        if int(unsigned.max()) < self.n_vars:
            return
        p = int(np.flatnonzero((indices < 0) | (indices >= self.n_vars))[0])
        row = start + int(np.searchsorted(indptr, p, side="right")) - 1
        raise self._malformed(row, f"index {int(indices[p])} out of range [0, {self.n_vars})")

    def _check_values(self, data: np.ndarray, start: int, stop: int) -> None:
        """Refuse NaN, infinities and negative values. Two reductions, no temporary arrays:
        a NaN makes the minimum NaN, an infinity shows in the minimum or the maximum. Also notes
        whether every value so far is a whole number (counts), until the first that is not."""
        if data.size == 0:
            return
        if self.integer_values and data.dtype.kind == "f":
            self.integer_values = bool(np.array_equal(data, np.rint(data)))
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
            with self._reading("rows", start, stop):
                indptr = indptr_ds[start : stop + 1].astype(np.int64)
                self._check_indptr(indptr, start, indices_ds.shape[0])
                lo, hi = int(indptr[0]), int(indptr[-1])
                indices, data = indices_ds[lo:hi], data_ds[lo:hi]
            self._check_indices(indices, indptr - lo, start)
            matrix = sp.csr_matrix((_scipy_values(data), indices, indptr - lo), shape=(stop - start, self.n_vars))
            yield MatrixChunk(start, stop, matrix)

    def _iter_backed(self, chunk_size: int) -> Iterator[MatrixChunk]:
        """A CSR group only anndata recognises: its backed matrix, sliced in row blocks."""
        for start in range(0, self.n_obs, chunk_size):
            stop = min(start + chunk_size, self.n_obs)
            with self._reading("rows", start, stop):
                matrix = sp.csr_matrix(self._backed[start:stop])
            indptr = matrix.indptr.astype(np.int64)
            if indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] > matrix.indices.size:  # pragma: no cover - anndata's
                raise self._malformed(start, "indptr is broken")
            self._check_indices(matrix.indices[: indptr[-1]], indptr, start)
            yield MatrixChunk(start, stop, matrix)

    def _iter_dense(self, chunk_size: int) -> Iterator[MatrixChunk]:
        node = self.matrix_node
        block_rows = max(1, _DENSE_BLOCK_VALUES // max(1, self.n_vars))
        for start in range(0, self.n_obs, chunk_size):
            stop = min(start + chunk_size, self.n_obs)
            with self._reading("rows", start, stop):
                blocks = [
                    sp.csr_matrix(_scipy_values(node[row : min(row + block_rows, stop)]))
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
        value_dtype = _scipy_values(np.empty(0, node["data"].dtype.newbyteorder("="))).dtype
        nnz = node["indices"].shape[0]
        try:
            files = [open(workdir / f"{k}.bin", "wb") for k in range(n_chunks)]
            try:
                col = 0
                while col < self.n_vars:
                    col_end = col + 1
                    base = int(indptr[col])
                    while col_end < self.n_vars and int(indptr[col_end + 1]) - base <= _CSC_BLOCK_VALUES:
                        col_end += 1
                    with self._reading("columns", col, col_end):
                        ptr = indptr[col : col_end + 1].astype(np.int64)
                        if col == 0 and ptr[0] != 0:
                            raise InputError(self.path, f"matrix {self.matrix_name}: column 0: indptr starts at {int(ptr[0])}, not 0")
                        if np.any(np.diff(ptr) < 0) or ptr[-1] > nnz:
                            raise InputError(self.path, f"matrix {self.matrix_name} has a broken indptr in columns {col}-{col_end - 1}")
                        if col_end == self.n_vars and ptr[-1] != nnz:
                            raise InputError(self.path, f"matrix {self.matrix_name}: column {col_end - 1}: indptr ends at {int(ptr[-1])}, not at nnz {nnz}")
                        rows = node["indices"][ptr[0] : ptr[-1]].astype(np.int64)
                        values = node["data"][ptr[0] : ptr[-1]].astype(value_dtype)
                    if rows.size and (rows.min() < 0 or rows.max() >= self.n_obs):
                        raise InputError(self.path, f"matrix {self.matrix_name} has row indices outside 0-{self.n_obs - 1} in columns {col}-{col_end - 1}")
                    cols = np.repeat(np.arange(col, col_end, dtype=np.int64), np.diff(ptr))
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

"""Small h5ad files written with anndata into a test's tmp_path.

Every builder returns the path it wrote. The count matrix ``COUNTS`` and the gene tables are
fixed literals so that tests can pin exact sentences; ``random_counts`` gives bigger inputs for
the chunking tests. Nothing here is a test: ``h5ad_factory`` is imported by the test modules.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

# 7 cells x 5 genes. Row 1 is empty, row 0 has a tie (genes 1 and 3), row 3 is all ties.
COUNTS = np.array(
    [
        [0, 3, 1, 3, 0],
        [0, 0, 0, 0, 0],
        [5, 0, 0, 0, 1],
        [1, 1, 1, 1, 1],
        [0, 0, 2, 0, 0],
        [2, 4, 0, 0, 7],
        [0, 1, 0, 0, 0],
    ],
    dtype=np.float32,
)
# Ensembl ids: the first three are mapped by HGNC_MAP, the last two fall back to feature_name.
GENE_IDS = ["ENSG00000000001", "ENSG00000000002", "ENSG00000000003", "ENSG00000000004", "ENSG00000000005"]
FEATURE_NAMES = ["fnA", "fnB", "fnC", "GD", "GE"]
HGNC_MAP = {"ENSG00000000001": "GA", "ENSG00000000002": "GB", "ENSG00000000003": "GC"}
TOKENS = ["GA", "GB", "GC", "GD", "GE"]
# Sentences of COUNTS with all genes (top_genes=0): value desc, ties by var position.
SENTENCES = ["GB GD GC", "", "GA GE", "GA GB GC GD GE", "GC", "GE GB GA", "GB"]
CELL_IDS = [f"cell{i}" for i in range(COUNTS.shape[0])]

MATRIX_FORMATS = ("csr", "csc", "dense")


def _quiet_write(adata: anndata.AnnData, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_h5ad(path)
    return path


def as_format(matrix: np.ndarray | sp.spmatrix, fmt: str) -> np.ndarray | sp.spmatrix:
    """The same values stored as CSR, CSC or a dense array."""
    if fmt == "csr":
        return sp.csr_matrix(matrix)
    if fmt == "csc":
        return sp.csc_matrix(matrix)
    if fmt == "dense":
        return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
    raise ValueError(fmt)


def gene_var(with_feature_name: bool = True, ids: list[str] | None = None) -> pd.DataFrame:
    """CELLxGENE-style var: Ensembl index, optional categorical ``feature_name``."""
    ids = GENE_IDS if ids is None else ids
    var = pd.DataFrame(index=pd.Index(ids))
    if with_feature_name:
        var["feature_name"] = pd.Categorical(FEATURE_NAMES[: len(ids)])
    return var


def tenx_var() -> pd.DataFrame:
    """10x-style var: symbols in the index, Ensembl ids in ``gene_ids``."""
    return pd.DataFrame(
        {
            "gene_ids": GENE_IDS,
            "feature_types": pd.Categorical(["Gene Expression"] * 5),
            "genome": pd.Categorical(["GRCh38"] * 5),
        },
        index=pd.Index(["symA", "symB", "symC", "GD", "GE"]),
    )


def simple_obs(n_obs: int) -> pd.DataFrame:
    return pd.DataFrame({"donor_id": pd.Categorical([f"d{i % 2}" for i in range(n_obs)])}, index=[f"cell{i}" for i in range(n_obs)])


def write_counts(
    path: Path,
    fmt: str = "csr",
    matrix: np.ndarray | None = None,
    var: pd.DataFrame | None = None,
    obs: pd.DataFrame | None = None,
) -> Path:
    """X only (no raw, no layers): COUNTS by default, stored as ``fmt``."""
    matrix = COUNTS if matrix is None else matrix
    obs = simple_obs(matrix.shape[0]) if obs is None else obs
    var = gene_var() if var is None else var
    return _quiet_write(anndata.AnnData(X=as_format(matrix, fmt), obs=obs, var=var), path)


def random_counts(n_obs: int, n_vars: int, seed: int = 0, dtype: type = np.float32, density: float = 0.3) -> np.ndarray:
    """Sparse-ish non-negative integer counts with some all-zero rows, as a dense array."""
    rng = np.random.default_rng(seed)
    values = rng.integers(1, 20, size=(n_obs, n_vars)).astype(dtype)
    values[rng.random((n_obs, n_vars)) > density] = 0
    values[:: max(1, n_obs // 4)] = 0  # some empty cells
    return values


def write_random(path: Path, fmt: str, n_obs: int = 23, n_vars: int = 11, seed: int = 0, dtype: type = np.float32) -> Path:
    """A bigger X (CSR/CSC/dense) with symbol var index ``g0``... for chunk-equality tests."""
    matrix = random_counts(n_obs, n_vars, seed, dtype)
    var = pd.DataFrame(index=[f"g{j}" for j in range(n_vars)])
    return write_counts(path, fmt, matrix=matrix, var=var, obs=simple_obs(n_obs))


def write_with_raw(path: Path, x_fmt: str = "dense") -> Path:
    """X scaled (negative values, 3 genes) and raw.X = COUNTS with a different, 5-gene var."""
    raw = anndata.AnnData(X=sp.csr_matrix(COUNTS), obs=simple_obs(7), var=gene_var())
    scaled = COUNTS[:, :3] - COUNTS[:, :3].mean(axis=0)
    adata = anndata.AnnData(X=as_format(scaled, x_fmt), obs=simple_obs(7), var=gene_var(ids=GENE_IDS[:3]))
    adata.raw = raw
    return _quiet_write(adata, path)


def write_with_counts_layer(path: Path, with_raw: bool = False) -> Path:
    """X log-normalised (all > 0 where counts > 0), layers['counts'] = COUNTS; optionally a raw
    whose values are COUNTS * 10 so tests can tell which matrix was read."""
    normalised = np.log1p(COUNTS) / 3.0
    adata = anndata.AnnData(X=sp.csr_matrix(normalised), obs=simple_obs(7), var=gene_var())
    adata.layers["counts"] = sp.csr_matrix(COUNTS)
    if with_raw:
        adata.raw = anndata.AnnData(X=sp.csr_matrix(COUNTS * 10), obs=simple_obs(7), var=gene_var())
    return _quiet_write(adata, path)


def write_bad_values(path: Path, kind: str, fmt: str = "csr", where: str = "X") -> Path:
    """COUNTS with one bad value in the last cell: ``negative``, ``nan``, ``inf`` or ``-inf``.
    ``where`` is ``X``, ``counts`` (layers) or ``raw.X``."""
    bad = {"negative": -1.0, "nan": np.nan, "inf": np.inf, "-inf": -np.inf}[kind]
    matrix = COUNTS.copy()
    matrix[6, 2] = bad
    if where == "X":
        return write_counts(path, fmt, matrix=matrix)
    if where == "counts":
        adata = anndata.AnnData(X=sp.csr_matrix(COUNTS), obs=simple_obs(7), var=gene_var())
        adata.layers["counts"] = as_format(matrix, fmt)
        return _quiet_write(adata, path)
    if where == "raw.X":
        adata = anndata.AnnData(X=sp.csr_matrix(COUNTS), obs=simple_obs(7), var=gene_var())
        adata.raw = anndata.AnnData(X=as_format(matrix, fmt), obs=simple_obs(7), var=gene_var())
        return _quiet_write(adata, path)
    raise ValueError(where)


def write_integer(path: Path, fmt: str = "csr", dtype: type = np.int64) -> Path:
    """COUNTS stored as an integer matrix."""
    return write_counts(path, fmt, matrix=COUNTS.astype(dtype))


def write_float64(path: Path, fmt: str = "csr") -> Path:
    return write_counts(path, fmt, matrix=COUNTS.astype(np.float64))


def write_stored_zero(path: Path) -> Path:
    """A CSR X with explicitly stored zeros (as in tiny2x7's raw.X)."""
    matrix = sp.csr_matrix(COUNTS)
    dense_full = sp.csr_matrix(np.ones_like(COUNTS))  # structure: every entry stored
    dense_full.data[:] = COUNTS.ravel()  # zeros now stored explicitly
    assert dense_full.nnz == COUNTS.size and matrix.nnz < COUNTS.size
    return _quiet_write(anndata.AnnData(X=dense_full, obs=simple_obs(7), var=gene_var()), path)


def write_without_x(path: Path) -> Path:
    """No X, no raw, no layers: there is no count matrix at all."""
    adata = anndata.AnnData(obs=simple_obs(7), var=gene_var())
    return _quiet_write(adata, path)


def write_zero_cells(path: Path, fmt: str = "csr") -> Path:
    """0 cells x 5 genes, with obs columns of several kinds so the empty schema is visible."""
    obs = kinds_obs(7).iloc[:0]
    return write_counts(path, fmt, matrix=np.zeros((0, 5), dtype=np.float32), obs=obs)


# -- obs columns ------------------------------------------------------------------------------
def kinds_obs(n_obs: int = 7) -> pd.DataFrame:
    """One obs column of each kind anndata writes, with missing values where the kind allows."""
    cycle = lambda values: [values[i % len(values)] for i in range(n_obs)]  # noqa: E731
    obs = pd.DataFrame(
        {
            "cat": pd.Categorical(cycle(["a", None, "b"])),
            "cat_all_nan": pd.Categorical([np.nan] * n_obs),
            "cat_int": pd.Categorical(cycle([10, 20, None])),
            "text": [f"t{i}" for i in range(n_obs)],  # unique -> stays a string-array
            "n_int": np.arange(n_obs, dtype=np.int64) * 3,
            "n_int32": np.arange(n_obs, dtype=np.int32),
            "f_nan": cycle([1.5, np.nan, -2.0]),
            "flag": cycle([True, False]),
            "nullable_int": pd.array(cycle([1, None, 3]), dtype="Int64"),
            "nullable_bool": pd.array(cycle([True, None, False]), dtype="boolean"),
        },
        index=[f"cell{i}" for i in range(n_obs)],
    )
    return obs


KINDS_EXPECTED_7 = {
    "cat": ["a", None, "b", "a", None, "b", "a"],
    "cat_all_nan": [None] * 7,
    "cat_int": ["10", "20", None, "10", "20", None, "10"],
    "text": [f"t{i}" for i in range(7)],
    "n_int": [0, 3, 6, 9, 12, 15, 18],
    "n_int32": [0, 1, 2, 3, 4, 5, 6],
    "f_nan": [1.5, None, -2.0, 1.5, None, -2.0, 1.5],
    "flag": [True, False, True, False, True, False, True],
    "nullable_int": [1, None, 3, 1, None, 3, 1],
    "nullable_bool": [True, None, False, True, None, False, True],
    "nullable_str": ["p", None, "q", "r", None, "s", "u"],
}


def write_obs_kinds(path: Path, fmt: str = "csr") -> Path:
    """COUNTS with ``kinds_obs`` plus a ``nullable_str`` column stored as nullable-string-array
    (anndata turns string columns with NA into categoricals, so it is written with write_elem)."""
    write_counts(path, fmt, obs=kinds_obs(7))
    with h5py.File(path, "r+") as handle:
        obs = handle["obs"]
        with anndata.settings.override(allow_write_nullable_strings=True):
            anndata.io.write_elem(obs, "nullable_str", pd.array(KINDS_EXPECTED_7["nullable_str"], dtype="string"))
        order = [c.decode() if isinstance(c, bytes) else str(c) for c in obs.attrs["column-order"]]
        obs.attrs["column-order"] = np.array(order + ["nullable_str"], dtype=object)
    return path


def write_obs_clash(path: Path, names: tuple[str, ...] = ("cell_id", "age")) -> Path:
    """obs columns named like the output's own columns; values ``<name>-<row>``."""
    obs = pd.DataFrame({name: [f"{name}-{i}" for i in range(7)] for name in names}, index=CELL_IDS)
    return write_counts(path, "csr", obs=obs)


def write_stages(path: Path, stage_labels: list[str | None] | None, stage_ids: list[str | None] | None) -> Path:
    """COUNTS with optional ``development_stage`` and/or ``development_stage_ontology_term_id``."""
    obs = pd.DataFrame(index=CELL_IDS)
    if stage_ids is not None:
        obs["development_stage_ontology_term_id"] = pd.Categorical(stage_ids)
    if stage_labels is not None:
        obs["development_stage"] = pd.Categorical(stage_labels)
    obs["donor_id"] = pd.Categorical([f"d{i}" for i in range(7)])
    return write_counts(path, "csr", obs=obs)


def write_legacy_categorical(path: Path) -> Path:
    """COUNTS whose ``donor_id`` uses the anndata 0.7 categorical layout: an int8 codes dataset
    with a ``categories`` object reference into ``obs/__categories``; codes x, y, missing, ..."""
    write_counts(path)
    with h5py.File(path, "r+") as handle:
        obs = handle["obs"]
        del obs["donor_id"]
        categories = obs.create_group("__categories").create_dataset(
            "donor_id", data=np.array(["x", "y"], dtype=object), dtype=h5py.string_dtype()
        )
        codes = obs.create_dataset("donor_id", data=np.array([0, 1, -1, 0, 1, 1, 0], dtype=np.int8))
        codes.attrs["categories"] = categories.ref
    return path


def write_no_genes(path: Path, fmt: str = "csr") -> Path:
    """4 cells x 0 genes."""
    var = pd.DataFrame(index=pd.Index([], dtype=str))
    return write_counts(path, fmt, matrix=np.zeros((4, 0), dtype=np.float32), var=var, obs=simple_obs(4))

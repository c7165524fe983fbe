"""The bad-input corpus: every kind of file a lab's folder may hold, each built by the tests, with
the outcome the data contract says. `python -m scrna_assets_tests.bad_input_corpus` prints the
table in docs/bad_inputs.md (a test keeps the two equal)."""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scrna_assets_tests.core import h5ad_vintages

N_CELLS, N_GENES = 6, 5
COUNTS = np.array(
    [[3, 0, 1, 0, 2], [0, 5, 0, 1, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [4, 0, 0, 2, 0], [0, 2, 3, 0, 7]],
    dtype=np.float32,
)
STAGES = ["30-year-old stage", "30-year-old stage", "45-year-old stage", "45-year-old stage", "60-year-old stage", "60-year-old stage"]


def _obs(n: int = N_CELLS, stages: list | None = None, **columns: object) -> pd.DataFrame:
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(n)])
    obs["donor_id"] = pd.Categorical([f"d{i % 3}" for i in range(n)])
    if stages is not False:
        obs["development_stage"] = pd.Categorical((stages or STAGES)[:n] if n else [])
    for name, values in columns.items():
        obs[name] = values
    return obs


def _var(n: int = N_GENES, feature_name: bool = True, index: list[str] | None = None) -> pd.DataFrame:
    var = pd.DataFrame(index=index or [f"ENSG{90000000000 + j:011d}" for j in range(n)])
    if feature_name:
        var["feature_name"] = pd.Categorical([f"GENE{j}" for j in range(n)])
    return var


def _write(path: Path, x: object, obs: pd.DataFrame | None = None, var: pd.DataFrame | None = None, **kw: object) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        anndata.AnnData(X=x, obs=obs if obs is not None else _obs(), var=var if var is not None else _var(), **kw).write_h5ad(path)


def _good(path: Path) -> None:
    _write(path, sp.csr_matrix(COUNTS))


def _truncated(path: Path) -> None:
    _good(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("matrix.csv", "a,b\n1,2\n")


def _hdf5_not_anndata(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("measurements", data=np.arange(10))


def _with_values(value: float) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        counts = COUNTS.copy()
        counts[2, 3] = value
        _write(path, sp.csr_matrix(counts))

    return build


def _raw_var_longer(path: Path) -> None:
    raw_counts = np.hstack([COUNTS, COUNTS[:, :3] * 2])
    raw = anndata.AnnData(X=sp.csr_matrix(raw_counts), obs=_obs(), var=_var(N_GENES + 3))
    _write(path, sp.csr_matrix(COUNTS[:, :N_GENES]), raw=raw)


def _symlink(path: Path) -> None:
    target = path.parent.parent / "elsewhere" / "real_file.h5ad"
    target.parent.mkdir(exist_ok=True)
    _good(target)
    os.symlink(target, path)


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "inside.txt").write_text("a folder, not a file")


def _unreadable(path: Path) -> None:
    _good(path)
    path.chmod(0)


@dataclass(frozen=True)
class Case:
    kind: str
    file_name: str
    build: Callable[[Path], None]
    refused: str = ""
    """For a refused file, the problem the one message names; empty when the file is processed."""
    cells: int = 0
    with_age: int = 0

    @property
    def outcome(self) -> str:
        if self.refused:
            return f"refused: {self.refused}"
        return f"processed: {self.cells} cells, {self.with_age} with age"


CASES = [
    Case("truncated h5ad", "truncated.h5ad", _truncated, refused="cannot be opened as HDF5/h5ad"),
    Case("zero-byte file", "empty.h5ad", lambda p: p.write_bytes(b""), refused="cannot be opened as HDF5/h5ad"),
    Case("text file renamed .h5ad", "text.h5ad", lambda p: p.write_text("cell,gene\n1,2\n"), refused="cannot be opened as HDF5/h5ad"),
    Case("zip archive renamed .h5ad", "archive.h5ad", _zip, refused="cannot be opened as HDF5/h5ad"),
    Case("HDF5 without AnnData groups", "plain_hdf5.h5ad", _hdf5_not_anndata, refused="has no count matrix"),
    Case("no X and no raw", "no_matrix.h5ad", lambda p: _write(p, None), refused="has no count matrix"),
    Case("0 cells", "zero_cells.h5ad", lambda p: _write(p, sp.csr_matrix((0, N_GENES), dtype=np.float32), obs=_obs(0))),
    Case("0 genes", "zero_genes.h5ad", lambda p: _write(p, sp.csr_matrix((N_CELLS, 0), dtype=np.float32), var=_var(0)), cells=6, with_age=6),
    Case("dense X", "dense.h5ad", lambda p: _write(p, COUNTS), cells=6, with_age=6),
    Case("CSC X", "csc.h5ad", lambda p: _write(p, sp.csc_matrix(COUNTS)), cells=6, with_age=6),
    Case("negative values", "negative.h5ad", _with_values(-1.0), refused="matrix X has negative values in rows 0-5"),
    Case("NaN values", "nan.h5ad", _with_values(np.nan), refused="matrix X has non-finite values (NaN or inf) in rows 0-5"),
    Case("infinite values", "inf.h5ad", _with_values(np.inf), refused="matrix X has non-finite values (NaN or inf) in rows 0-5"),
    Case("integer matrix", "integer.h5ad", lambda p: _write(p, sp.csr_matrix(COUNTS.astype(np.int64))), cells=6, with_age=6),
    Case("float64 matrix", "float64.h5ad", lambda p: _write(p, sp.csr_matrix(COUNTS.astype(np.float64))), cells=6, with_age=6),
    Case("raw.var longer than var", "raw_longer.h5ad", _raw_var_longer, cells=6, with_age=6),
    Case("obs without development_stage or its ontology id", "no_stage.h5ad", lambda p: _write(p, sp.csr_matrix(COUNTS), obs=_obs(stages=False)), cells=6),
    Case("development_stage all null", "null_stage.h5ad", lambda p: _write(p, sp.csr_matrix(COUNTS), obs=_obs(stages=[np.nan] * N_CELLS)), cells=6),
    Case("unknown stage label", "unknown_stage.h5ad", lambda p: _write(p, sp.csr_matrix(COUNTS), obs=_obs(stages=["unknown", "adult stage", "blue moon stage"] * 2)), cells=6),
    Case("var without feature_name", "no_feature_name.h5ad", lambda p: _write(p, sp.csr_matrix(COUNTS), var=_var(feature_name=False, index=[f"G{j}" for j in range(N_GENES)])), cells=6, with_age=6),
    Case("duplicate var names", "duplicate_var.h5ad", lambda p: _write(p, sp.csr_matrix(COUNTS), var=_var(feature_name=False, index=["G0", "G1", "G1", "G2", "G0"])), cells=6, with_age=6),
    Case("duplicate obs names", "duplicate_obs.h5ad", lambda p: _write(p, sp.csr_matrix(COUNTS), obs=_obs().set_axis(["c"] * N_CELLS)), cells=6, with_age=6),
    Case("non-ASCII file name", "Zellen_ß_Ärzte.h5ad", _good, cells=6, with_age=6),
    Case("very long file name (240 characters)", "long_" + "x" * 229 + ".h5ad", _good, cells=6, with_age=6),
    Case("name that sanitizes to nothing", "@@@.h5ad", _good, refused="the name '@@@' has no usable characters for a dataset name"),
    Case("two names that sanitize alike (both refused)", "twin b.h5ad", _good, refused="dataset name 'twin_b' is shared by twin b.h5ad, twin_b.h5ad; rename one"),
    Case("two names that sanitize alike (the other one)", "twin_b.h5ad", _good, refused="dataset name 'twin_b' is shared by twin b.h5ad, twin_b.h5ad; rename one"),
    Case("symlink to an h5ad elsewhere (followed)", "linked.h5ad", _symlink, cells=6, with_age=6),
    Case("directory named .h5ad", "folder.h5ad", _directory, refused="is a directory, not an h5ad file"),
    Case("unreadable file (no read permission; skipped as root, who reads anyway)", "unreadable.h5ad", _unreadable, refused="cannot be opened as HDF5/h5ad"),
    Case("obs and matrix disagree on the number of cells", "obs_mismatch.h5ad", lambda p: _mismatch(p), refused="obs has 5 rows but matrix X has 6"),
]


def _mismatch(path: Path) -> None:
    _good(path)
    with h5py.File(path, "r+") as f:
        f["X"].attrs["shape"] = np.array([N_CELLS, N_GENES])
        index = f["obs"]["_index"]
        values = index[:-1]
        del f["obs"]["_index"]
        f["obs"].create_dataset("_index", data=values, dtype=h5py.string_dtype())
        f["obs"]["_index"].attrs.update({"encoding-type": "string-array", "encoding-version": "0.2.0"})


def _edited(edit: Callable[[h5py.File], None]) -> Callable[[Path], None]:
    """A good file, then one element changed with h5py (anndata cannot read the result either)."""

    def build(path: Path) -> None:
        _good(path)
        with h5py.File(path, "r+") as f:
            edit(f)

    return build


def _set_code(f: h5py.File) -> None:
    f["obs/donor_id/codes"][4] = 7


def _missing_column(f: h5py.File) -> None:
    f["obs"].attrs["column-order"] = np.array([*f["obs"].attrs["column-order"], "x"], dtype=object)


def _obs_encoding(f: h5py.File) -> None:
    f["obs"].attrs["encoding-type"] = "foo"


def _obs_2d(f: h5py.File) -> None:
    h5ad_vintages.add_obs_column(f, "col", np.zeros((N_CELLS, 2)))


def _set(key: str, position: int, value: int) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        f[key][position] = value

    return edit


CASES += [
    Case("anndata < 0.7 layout (compound obs/var, h5sparse X, top-level raw.X)", "anndata06.h5ad",
         lambda p: h5ad_vintages.write_anndata06(p, COUNTS, obs=_obs(), var=_var(), raw_x=COUNTS * 2), cells=6, with_age=6),
    Case("anndata 0.7 layout (dataframe 0.1.0, __categories)", "anndata07.h5ad",
         lambda p: h5ad_vintages.write_anndata07(p, COUNTS, obs=_obs(), var=_var()), cells=6, with_age=6),
    Case("sparse X marked h5sparse_format instead of encoding-type", "h5sparse_x.h5ad",
         lambda p: (_good(p), h5ad_vintages.rewrite_h5sparse(p)), cells=6, with_age=6),
    Case("numeric development_stage (no age; the log says why)", "numeric_stage.h5ad",
         lambda p: _write(p, sp.csr_matrix(COUNTS), obs=_obs(stages=False, development_stage=np.arange(N_CELLS) + 30)), cells=6),
    Case("categorical code out of range", "bad_code.h5ad", _edited(_set_code), refused="obs/donor_id: categorical code 7 out of range (3 categories)"),
    Case("column-order names a missing column", "missing_column.h5ad", _edited(_missing_column), refused="obs: column-order names missing column 'x'"),
    Case("obs with an unknown encoding", "obs_encoding.h5ad", _edited(_obs_encoding), refused="obs: unknown encoding 'foo'"),
    Case("2-D obs column", "obs_2d.h5ad", _edited(_obs_2d), refused="obs/col: 2-D column (shape (6, 2))"),
    Case("CSR index just past n_vars", "index_past_end.h5ad", _edited(_set("X/indices", 6, N_GENES)), refused="matrix X: row 2: index 5 out of range [0, 5)"),
    Case("CSR index far out of range (once a segmentation fault)", "index_far_out.h5ad", _edited(_set("X/indices", 6, 10**9)),
         refused="matrix X: row 2: index 1000000000 out of range [0, 5)"),
    Case("CSR index -1", "index_negative.h5ad", _edited(_set("X/indices", 3, -1)), refused="matrix X: row 1: index -1 out of range [0, 5)"),
    Case("CSR indptr decreasing", "indptr_decreasing.h5ad", _edited(_set("X/indptr", 2, 2)), refused="matrix X: row 1: indptr decreases (3 -> 2)"),
    Case("gene listed twice in one row (valid CSR: summed, listed once)", "repeated_gene.h5ad", _edited(_set("X/indices", 12, 2)), cells=6, with_age=6),
]


def render_table() -> str:
    lines = [
        "# Bad-input corpus",
        "",
        "Generated from `scrna_assets_tests/bad_input_corpus.py` (`uv run python -m scrna_assets_tests.bad_input_corpus`);",
        "`scrna_assets_tests/test_bad_inputs.py` runs every row in one batch and checks this file is current.",
        "Refused files get one message naming the file and the problem; the batch goes on; no output is",
        "left for them and every input is byte-identical afterwards.",
        "",
        "| input kind | file | outcome |",
        "|---|---|---|",
    ]
    lines += [f"| {c.kind} | `{c.file_name if len(c.file_name) < 40 else c.file_name[:20] + '…'}` | {c.outcome} |" for c in CASES]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_table(), end="")

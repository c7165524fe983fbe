"""example.write_example: the offline demo dataset is deterministic and CellxGene-like."""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata
import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from scrna_assets.core.ages import parse_age_years
from scrna_assets.core.example import EXAMPLE_NAME, NON_POINT_STAGES, write_example
from scrna_assets.core.gene_tokens import is_ensembl_id
from scrna_assets.core.hgnc import read_hgnc_table


def read(path: Path) -> anndata.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return anndata.read_h5ad(path)


@pytest.fixture(scope="module")
def example(example_files: tuple[Path, Path]) -> tuple[Path, Path, anndata.AnnData]:
    """The session's example files (conftest) and their AnnData, read once per module."""
    h5ad_path, hgnc_path = example_files
    return h5ad_path, hgnc_path, read(h5ad_path)


def test_paths_and_no_temp_files_left(example: tuple[Path, Path, anndata.AnnData]) -> None:
    """Both files are written atomically under the expected names; no .tmp remains."""
    h5ad_path, hgnc_path, _ = example
    assert h5ad_path.name == f"{EXAMPLE_NAME}.h5ad"
    assert hgnc_path.name == f"{EXAMPLE_NAME}_hgnc.tsv"
    assert h5ad_path.is_file() and hgnc_path.is_file()
    assert not [p.name for p in h5ad_path.parent.iterdir() if p.name.endswith(".tmp")]


def test_two_writes_have_equal_contents(tmp_path: Path, example: tuple[Path, Path, anndata.AnnData]) -> None:
    """write_example is deterministic: a second write has the same matrix, obs, var and HGNC table."""
    h5ad_path, hgnc_path, first = example
    second_h5ad, second_hgnc = write_example(tmp_path / "b")
    second = read(second_h5ad)
    assert (first.X != second.X).nnz == 0
    assert first.X.dtype == second.X.dtype
    assert first.obs.equals(second.obs)
    assert first.var.equals(second.var)
    assert list(first.obs_names) == list(second.obs_names)
    assert hgnc_path.read_bytes() == second_hgnc.read_bytes()


def test_shape_and_donors(example: tuple[Path, Path, anndata.AnnData]) -> None:
    """Pinned size: 3000 cells x 1208 features (1200 genes + 8 ERCC), 39 donors."""
    _, _, adata = example
    assert (adata.n_obs, adata.n_vars) == (3000, 1208)
    assert adata.obs["donor_id"].nunique() == 39
    assert adata.obs["donor_id"].nunique() >= 30
    assert list(adata.obs.columns) == [
        "donor_id",
        "development_stage_ontology_term_id",
        "development_stage",
        "tissue",
        "sex",
        "total_counts",
        "is_primary_data",
    ]


def test_counts_are_csr_integers(example: tuple[Path, Path, anndata.AnnData]) -> None:
    """X is stored as CSR on disk and holds non-negative integer counts (what the pipeline wants)."""
    h5ad_path, _, adata = example
    with h5py.File(h5ad_path, "r") as handle:
        assert handle["X"].attrs["encoding-type"] == "csr_matrix"
        assert "raw" not in handle
    assert sp.issparse(adata.X)
    data = adata.X.data
    assert data.min() >= 1 and np.array_equal(data, np.round(data))
    np.testing.assert_allclose(np.asarray(adata.X.sum(axis=1)).ravel(), adata.obs["total_counts"].to_numpy())
    assert (np.diff(adata.X.indptr) == 0).sum() > 0  # some cells express nothing


def test_ensembl_ids_with_feature_name(example: tuple[Path, Path, anndata.AnnData]) -> None:
    """Genes have Ensembl-like ids and a feature_name; the 8 spike-ins are ERCC ids."""
    _, hgnc_path, adata = example
    ids = list(adata.var_names)
    assert sum(is_ensembl_id(i) for i in ids) == 1200
    assert [i for i in ids if not is_ensembl_id(i)] == [f"ERCC-{k:05d}" for k in range(8)]
    assert "feature_name" in adata.var.columns
    assert adata.var["feature_name"].notna().all()
    mapping = read_hgnc_table(hgnc_path)
    assert mapping.height == 1160
    assert set(mapping["ensembl_gene_id"].to_list()) <= set(ids)


def test_point_and_non_point_stages(example: tuple[Path, Path, anndata.AnnData]) -> None:
    """Most donors have a point age; range/broad/unknown stages (no age) are present too."""
    _, _, adata = example
    stages = set(adata.obs["development_stage"].astype(str))
    assert set(NON_POINT_STAGES) <= stages
    donors = adata.obs.drop_duplicates("donor_id")
    with_age = [parse_age_years(s) for s in donors["development_stage"].astype(str)]
    assert sum(a is not None for a in with_age) == 36
    assert all(18 <= a < 90 for a in with_age if a is not None)
    assert sum(a is None for a in with_age) == 3


def test_stage_term_ids_match_labels(example: tuple[Path, Path, anndata.AnnData]) -> None:
    """Term ids carry the same stage as the labels, so ages also come out of id-only copies."""
    from scrna_assets.core.ages import term_label

    _, _, adata = example
    pairs = adata.obs[["development_stage_ontology_term_id", "development_stage"]].drop_duplicates()
    for term_id, label in pairs.astype(str).itertuples(index=False):
        if label == "unknown":
            assert term_id == "unknown"
        else:
            assert term_id.startswith("HsapDv:")
            assert term_label(term_id) == label


def test_example_converts_with_its_mini_hgnc(tmp_path: Path, example: tuple[Path, Path, anndata.AnnData]) -> None:
    """The example exercises every token rule: 1160 HGNC ids, 39 feature_name fallbacks, one
    repeated feature_name and 8 spike-ins (names with spaces) dropped."""
    from scrna_assets.core.convert import convert_h5ad

    h5ad_path, hgnc_path, adata = example
    table = read_hgnc_table(hgnc_path)
    mapping = dict(zip(table["ensembl_gene_id"].to_list(), table["symbol"].to_list()))
    result = convert_h5ad(h5ad_path, EXAMPLE_NAME, tmp_path / "chunks", mapping, 1000, 0, "zstd")
    assert result.gene_counts == {
        "genes_total": 1208,
        "genes_mapped_hgnc": 1160,
        "genes_fallback": 39,
        "genes_dropped": 9,
        "genes_duplicate_token": 1,
    }
    assert result.n_cells == 3000 and len(result.chunk_files) == 3
    assert result.empty_sentences == int((np.diff(adata.X.indptr) == 0).sum())

"""A small, deterministic CellxGene-like dataset for trying the pipeline offline.

Synthetic on purpose (no download, no licence question): Ensembl-style ids with
``feature_name``, a matching mini HGNC table, CSR raw counts, 36 donors at point ages plus
donors at range and broad stages (which give no age), and a few ERCC spike-ins.
"""

from __future__ import annotations

from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp

EXAMPLE_NAME = "example_cellxgene"
N_CELLS = 3000
N_GENES = 1200
N_SPIKE_INS = 8
POINT_AGE_DONORS = 36
NON_POINT_STAGES = ("25-44 year-old stage", "adult stage", "unknown")


def _gene_table() -> pd.DataFrame:
    ids = [f"ENSG{90000000000 + i:011d}" for i in range(N_GENES)]
    symbols = [f"SYNG{i:04d}" for i in range(N_GENES)]
    names = list(symbols)
    for i in range(N_GENES - 40, N_GENES - 20):  # not in the mini HGNC table: fallback to feature_name
        names[i] = f"SYNF{i:04d}"
    names[N_GENES - 20] = names[N_GENES - 21]  # a repeated feature_name: only the first row keeps it
    ids += [f"ERCC-{i:05d}" for i in range(N_SPIKE_INS)]
    names += [f"ERCC-{i:05d} (spike-in {i})" for i in range(N_SPIKE_INS)]
    table = pd.DataFrame({"feature_name": pd.Categorical(names), "hgnc_symbol": symbols + [""] * N_SPIKE_INS}, index=ids)
    table["feature_biotype"] = pd.Categorical(["gene"] * N_GENES + ["spike-in"] * N_SPIKE_INS)
    return table


def _stage_term_ids() -> dict[str, str]:
    """Label -> HsapDv term id, from the ontology that cellxgene-ontology-guide ships."""
    from cellxgene_ontology_guide.ontology_parser import OntologyParser

    terms = OntologyParser().cxg_schema.ontology("HsapDv")
    current_last = sorted(terms.items(), key=lambda item: not item[1]["deprecated"])
    ids = {term["label"]: term_id for term_id, term in current_last}
    ids["unknown"] = "unknown"
    return ids


def _donors(rng: np.random.Generator) -> pd.DataFrame:
    term_ids = _stage_term_ids()
    labels = [f"{int(age)}-year-old stage" for age in rng.integers(18, 90, size=POINT_AGE_DONORS)]
    labels += list(NON_POINT_STAGES)
    rows = [
        (f"donor_{d:02d}", term_ids[label], label) for d, label in enumerate(labels)
    ]
    return pd.DataFrame(rows, columns=["donor_id", "development_stage_ontology_term_id", "development_stage"])


def make_example_adata(seed: int = 0) -> anndata.AnnData:
    rng = np.random.default_rng(seed)
    genes = _gene_table()
    n_vars = len(genes)
    donors = _donors(rng)
    donor_of_cell = rng.integers(0, len(donors), size=N_CELLS)
    gene_weights = rng.pareto(1.2, size=n_vars) + 0.05
    gene_weights /= gene_weights.sum()
    indptr = [0]
    indices: list[np.ndarray] = []
    data: list[np.ndarray] = []
    for _ in range(N_CELLS):
        n_expressed = int(rng.integers(0, 260)) if rng.random() > 0.01 else 0
        cols = np.sort(rng.choice(n_vars, size=n_expressed, replace=False, p=gene_weights))
        indices.append(cols)
        data.append(rng.geometric(0.35, size=n_expressed).astype(np.float32))
        indptr.append(indptr[-1] + n_expressed)
    matrix = sp.csr_matrix(
        (np.concatenate(data), np.concatenate(indices), np.array(indptr)), shape=(N_CELLS, n_vars)
    )
    obs = donors.iloc[donor_of_cell].reset_index(drop=True)
    obs.index = [f"cell_{i:05d}" for i in range(N_CELLS)]
    for column in obs.columns:
        obs[column] = pd.Categorical(obs[column])
    obs["tissue"] = pd.Categorical(rng.choice(["blood", "lung", "liver"], size=N_CELLS))
    obs["sex"] = pd.Categorical(np.where(donor_of_cell % 2 == 0, "female", "male"))
    obs["total_counts"] = np.asarray(matrix.sum(axis=1)).ravel().astype(np.float32)
    obs["is_primary_data"] = True
    var = genes.drop(columns=["hgnc_symbol"])
    return anndata.AnnData(X=matrix, obs=obs, var=var, uns={"title": "scrna_assets example"})


def write_example(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write ``<folder>/example_cellxgene.h5ad`` and its mini HGNC table; return both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    h5ad_path = folder / f"{EXAMPLE_NAME}.h5ad"
    hgnc_path = folder / f"{EXAMPLE_NAME}_hgnc.tsv"
    genes = _gene_table()
    mapped = genes[genes["hgnc_symbol"] != ""].iloc[: N_GENES - 40]
    hgnc = pd.DataFrame({"hgnc_id": [f"HGNC:{900000 + i}" for i in range(len(mapped))], "symbol": mapped["hgnc_symbol"].to_numpy(), "ensembl_gene_id": mapped.index})
    tmp_tsv = hgnc_path.with_name(hgnc_path.name + ".tmp")
    hgnc.to_csv(tmp_tsv, sep="\t", index=False)
    tmp_tsv.replace(hgnc_path)
    tmp_h5ad = h5ad_path.with_name(h5ad_path.name + ".tmp")
    make_example_adata(seed).write_h5ad(tmp_h5ad)
    tmp_h5ad.replace(h5ad_path)
    return h5ad_path, hgnc_path

"""Tests for ``scrna_assets.core.gene_tokens``: which token every var row gets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scrna_assets.core.gene_tokens import GeneTokens, assign_gene_tokens, is_ensembl_id
from scrna_assets.core.hgnc import read_hgnc_table

HGNC = {"ENSG00000141510": "TP53", "ENSG00000012048": "BRCA1", "ENSG00000075624": "ACTB"}


def tokens_of(result: GeneTokens) -> list[str | None]:
    """The token of every var row, None for no token."""
    return [result.vocabulary[i] if i >= 0 else None for i in result.token_index]


def counts(total: int, mapped: int, fallback: int, dropped: int, duplicates: int) -> dict[str, int]:
    return {
        "genes_total": total,
        "genes_mapped_hgnc": mapped,
        "genes_fallback": fallback,
        "genes_dropped": dropped,
        "genes_duplicate_token": duplicates,
    }


def test_is_ensembl_id() -> None:
    """Human and mouse gene ids, with or without version, are Ensembl ids; symbols are not."""
    assert is_ensembl_id("ENSG00000141510")
    assert is_ensembl_id("ENSG00000141510.17")
    assert is_ensembl_id("ENSMUSG00000059552")
    assert not is_ensembl_id("TP53")
    assert not is_ensembl_id("")
    assert not is_ensembl_id("ENST00000269305")  # a transcript, not a gene


def test_cellxgene_style_var_all_rules() -> None:
    """One var table that exercises every rule in order, with exact tokens and counts."""
    var = pd.DataFrame(
        {
            "feature_name": [
                "TP53_old",  # rule 1 wins over feature_name
                "BRCA1",  # rule 1 via versioned id
                "MYGENE",  # unmapped id -> rule 2
                "ENSG00000000999",  # feature_name is an Ensembl id -> skip rule 2; index is Ensembl -> none
                "",  # empty feature_name, index Ensembl -> none
                "ERCC-00002 (spike-in control)",  # whitespace -> no token, no fall-through
                "TP53",  # duplicate of row 0's token
                "LOCAL1",  # non-Ensembl index, feature_name used
            ]
        },
        index=[
            "ENSG00000141510",
            "ENSG00000012048.23",
            "ENSG00000000003",
            "ENSG00000000999",
            "ENSG00000000005",
            "ERCC-00002",
            "ENSG00000000419",
            "idx_local",
        ],
    )
    result = assign_gene_tokens(var, HGNC)
    assert tokens_of(result) == ["TP53", "BRCA1", "MYGENE", None, None, None, None, "LOCAL1"]
    assert result.vocabulary == ["TP53", "BRCA1", "MYGENE", "LOCAL1"]
    assert result.token_index.tolist() == [0, 1, 2, -1, -1, -1, -1, 3]
    assert result.counts() == counts(8, 2, 2, 4, 1)


def test_tenx_style_var_uses_gene_ids_column() -> None:
    """10x var: symbols in the index, Ensembl ids in ``gene_ids``; HGNC symbol wins, else index."""
    var = pd.DataFrame(
        {"gene_ids": ["ENSG00000141510.5", "ENSG00000000003", "ENSG00000075624", "ENSG00000000005"]},
        index=["p53-alias", "TSPAN6", "ACTB", "ENSG00000000005"],
    )
    result = assign_gene_tokens(var, HGNC)
    assert tokens_of(result) == ["TP53", "TSPAN6", "ACTB", None]
    assert result.counts() == counts(4, 2, 1, 1, 0)


def test_index_fallback_without_feature_name() -> None:
    """Rule 3: with no feature_name column the non-Ensembl index is the token; Ensembl index
    without HGNC mapping gives no token (mouse ids included)."""
    var = pd.DataFrame(index=["GENE1", "ENSMUSG00000059552", "ENSG00000141510.3", "GENE2"])
    result = assign_gene_tokens(var, HGNC)
    assert tokens_of(result) == ["GENE1", None, "TP53", "GENE2"]
    assert result.counts() == counts(4, 1, 2, 1, 0)


def test_missing_feature_name_values_fall_through_to_index() -> None:
    """None / NaN / blank / categorical-NaN feature names are empty, so rule 3 applies."""
    var = pd.DataFrame(
        {"feature_name": pd.Categorical(["A", None, "C", None])},
        index=["ia", "ib", "ic", "ENSG00000000001"],
    )
    assert tokens_of(assign_gene_tokens(var, {})) == ["A", "ib", "C", None]
    var = pd.DataFrame({"feature_name": [None, np.nan, "   ", " X "]}, index=["i1", "i2", "i3", "i4"])
    assert tokens_of(assign_gene_tokens(var, {})) == ["i1", "i2", "i3", "X"]


def test_nullable_string_feature_name_missing_is_empty() -> None:
    """pd.NA is a missing feature_name, not the gene name '<NA>'."""
    var = pd.DataFrame(
        {"feature_name": pd.array(["A", pd.NA], dtype="string")}, index=["ia", "ib"]
    )
    assert tokens_of(assign_gene_tokens(var, {})) == ["A", "ib"]


def test_whitespace_tokens_are_dropped() -> None:
    """Spike-ins and other names with any whitespace (space, tab) give no token."""
    var = pd.DataFrame(index=["ERCC 00002", "GENE\tX", "OK"])
    result = assign_gene_tokens(var, {})
    assert tokens_of(result) == [None, None, "OK"]
    assert result.counts() == counts(3, 0, 1, 2, 0)


def test_duplicate_tokens_keep_first_row() -> None:
    """Two versions of one id, and a fallback name equal to an HGNC symbol, collide: first wins."""
    var = pd.DataFrame(
        {"feature_name": ["x", "y", "TP53", "B", "B"]},
        index=["GENE0", "ENSG00000141510.1", "ENSG00000141510.2", "ENSG00000000001", "ENSG00000000002"],
    )
    var.loc["GENE0", "feature_name"] = "TP53"
    result = assign_gene_tokens(var, HGNC)
    assert tokens_of(result) == ["TP53", None, None, "B", None]
    assert result.vocabulary == ["TP53", "B"]
    assert result.counts() == counts(5, 0, 2, 3, 3)


def test_empty_var() -> None:
    """No genes: empty vocabulary and zero counts."""
    result = assign_gene_tokens(pd.DataFrame(index=pd.Index([], dtype=str)), HGNC)
    assert result.vocabulary == []
    assert len(result.token_index) == 0
    assert result.counts() == counts(0, 0, 0, 0, 0)


def test_counts_add_up_on_random_var() -> None:
    """mapped + fallback + dropped == total; token_index points at unique vocabulary entries."""
    rng = np.random.default_rng(7)
    ids = [f"ENSG{n:011d}" for n in rng.choice(50, size=200)]
    names = [rng.choice(["", "G1", "G2", "ENSG00000000001", "with space", f"N{i}"]) for i in range(200)]
    mapping = {f"ENSG{n:011d}": f"S{n % 7}" for n in range(0, 50, 2)}
    result = assign_gene_tokens(pd.DataFrame({"feature_name": names}, index=ids), mapping)
    c = result.counts()
    assert c["genes_mapped_hgnc"] + c["genes_fallback"] + c["genes_dropped"] == 200
    assert c["genes_mapped_hgnc"] + c["genes_fallback"] == len(result.vocabulary)
    assert len(set(result.vocabulary)) == len(result.vocabulary)
    kept = result.token_index[result.token_index >= 0]
    assert kept.tolist() == list(range(len(result.vocabulary)))


def test_with_real_hgnc_table(shared_data: Path) -> None:
    """The real HGNC table maps versioned CellxGene ids to approved symbols."""
    table = read_hgnc_table(shared_data / "hgnc" / "hgnc_complete_set.parquet")
    mapping = dict(zip(table["ensembl_gene_id"], table["symbol"]))
    var = pd.DataFrame(
        {"feature_name": ["p53", "LINC_x", "MyGene"]},
        index=["ENSG00000141510.18", "ENSG00000230417", "ENSG99999999999"],
    )
    result = assign_gene_tokens(var, mapping)
    assert tokens_of(result) == ["TP53", "LINC00595", "MyGene"]
    assert result.counts() == counts(3, 2, 1, 0, 0)

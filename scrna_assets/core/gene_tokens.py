"""Decide the token (gene symbol) of every var row, by the data contract's rules in order."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

ENSEMBL_ID = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
ENSEMBL_ID_COLUMNS = ("gene_ids", "gene_id", "ensembl_id", "ensembl_gene_id")
WHITESPACE = re.compile(r"\s")
"""Any character ``str.isspace`` calls whitespace (``re``'s ``\\s`` for str patterns): a token with one is no token."""


@dataclass(frozen=True)
class GeneTokens:
    """``token_index[i]`` is the vocabulary position of var row i's token, or -1 for none."""

    vocabulary: list[str]
    token_index: np.ndarray
    mapped_hgnc: int
    fallback: int
    dropped: int
    duplicates: int

    def counts(self) -> dict[str, int]:
        return {
            "genes_total": len(self.token_index),
            "genes_mapped_hgnc": self.mapped_hgnc,
            "genes_fallback": self.fallback,
            "genes_dropped": self.dropped,
            "genes_duplicate_token": self.duplicates,
        }


def is_ensembl_id(value: str) -> bool:
    return bool(ENSEMBL_ID.match(value))


def _strip_version(ensembl_id: str) -> str:
    return ensembl_id.split(".", 1)[0]


def _text(value: object) -> str:
    """A var cell as text; None, NaN and pd.NA (nullable string columns) are empty."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


def assign_gene_tokens(var: pd.DataFrame, ensembl_to_symbol: dict[str, str]) -> GeneTokens:
    """Rule 1: HGNC symbol of the Ensembl id (var index, or a gene-id column for 10x-style var);
    rule 2: ``feature_name`` if not an Ensembl id; rule 3: the var index if not an Ensembl id;
    else no token. Tokens with whitespace are no tokens; a repeated token stays on its first row.
    """
    index = [_text(v) for v in var.index]
    names = [_text(v) for v in var["feature_name"]] if "feature_name" in var.columns else [""] * len(index)
    id_column = next((c for c in ENSEMBL_ID_COLUMNS if c in var.columns), None)
    alt_ids = [_text(v) for v in var[id_column]] if id_column else [""] * len(index)

    vocabulary: list[str] = []
    seen: dict[str, int] = {}
    token_index = np.full(len(index), -1, dtype=np.int32)
    mapped = fallback = dropped = duplicates = 0
    for row, (var_id, name, alt_id) in enumerate(zip(index, names, alt_ids)):
        var_id_is_ensembl = is_ensembl_id(var_id)
        symbol = ""
        for candidate, candidate_is_ensembl in ((var_id, var_id_is_ensembl), (alt_id, alt_id and is_ensembl_id(alt_id))):
            if candidate_is_ensembl and _strip_version(candidate) in ensembl_to_symbol:
                symbol = ensembl_to_symbol[_strip_version(candidate)]
                break
        token, via_hgnc = "", False
        if symbol:
            token, via_hgnc = symbol, True
        elif name and not is_ensembl_id(name):
            token = name
        elif var_id and not var_id_is_ensembl:
            token = var_id
        if not token or WHITESPACE.search(token):
            dropped += 1
            continue
        if token in seen:
            duplicates += 1
            dropped += 1
            continue
        seen[token] = len(vocabulary)
        token_index[row] = len(vocabulary)
        vocabulary.append(token)
        mapped += via_hgnc
        fallback += not via_hgnc
    return GeneTokens(vocabulary, token_index, mapped, fallback, dropped, duplicates)

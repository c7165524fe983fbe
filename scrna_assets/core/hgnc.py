"""The HGNC Ensembl-id -> approved-symbol table: read a local copy, or download and cache it."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from pathlib import Path

import polars as pl

from scrna_assets.core.atomic_files import write_bytes_atomic

HGNC_URL = "https://storage.googleapis.com/public-download-files/hgnc/tsv/tsv/hgnc_complete_set.txt"
MAPPING_SCHEMA = {"ensembl_gene_id": pl.String, "symbol": pl.String}


def read_hgnc_table(path: str | Path) -> pl.DataFrame:
    """Ensembl id -> symbol from an HGNC complete set (TSV or parquet), one row per Ensembl id.

    Rows without an Ensembl id are dropped; an id shared by two symbols keeps the first
    (by HGNC id order in the file), so the mapping is a function.
    """
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            columns = list(pl.read_parquet_schema(path))
        else:
            with open(path, encoding="utf-8", errors="replace") as handle:
                columns = handle.readline().rstrip("\r\n").split("\t")
    except (OSError, pl.exceptions.PolarsError) as error:
        raise ValueError(f"{path}: cannot be read as an HGNC table ({error})") from error
    missing = {"symbol", "ensembl_gene_id"} - set(columns)
    if missing:
        raise ValueError(f"{path}: not an HGNC complete set (missing columns {sorted(missing)})")
    if path.suffix == ".parquet":
        table = pl.read_parquet(path, columns=["symbol", "ensembl_gene_id"])
    else:
        table = pl.read_csv(
            path, separator="\t", columns=["symbol", "ensembl_gene_id"], infer_schema=False, quote_char=None
        )
    return (
        table.select(pl.col("ensembl_gene_id").str.strip_chars(), pl.col("symbol").str.strip_chars())
        .filter(pl.col("ensembl_gene_id").is_not_null() & (pl.col("ensembl_gene_id") != ""))
        .unique(subset="ensembl_gene_id", keep="first", maintain_order=True)
        .sort("ensembl_gene_id")
    )


def download_hgnc(destination: Path, url: str = HGNC_URL, timeout: float = 30.0) -> Path:
    """Download the HGNC complete set to ``destination`` atomically.

    The body (~15 MB) is read into memory and checked against Content-Length first, so a dropped
    connection never touches the disk; then ``write_bytes_atomic`` puts it in place (no temp file
    survives a full disk, and a failed write is a ``WriteError`` naming the folder).
    """
    blocks: list[bytes] = []
    received = 0
    with urllib.request.urlopen(url, timeout=timeout) as response:
        expected = response.headers.get("Content-Length")
        while block := response.read(1 << 20):
            blocks.append(block)
            received += len(block)
    if expected is not None and received != int(expected):
        raise OSError(f"HGNC download from {url} was cut short ({received} of {expected} bytes)")
    write_bytes_atomic(destination, b"".join(blocks))
    return destination


def empty_mapping() -> pl.DataFrame:
    return pl.DataFrame(schema=MAPPING_SCHEMA)


def resolve_hgnc_mapping(
    hgnc_file: str | None, cache_file: Path, offline: bool
) -> tuple[pl.DataFrame, str, str | None]:
    """The mapping, where it came from, and a warning when there is none.

    Order: an explicit file; a cached download; a fresh download (unless offline); empty.
    """
    if hgnc_file:
        return read_hgnc_table(hgnc_file), f"file:{hgnc_file}", None
    if cache_file.exists():
        try:
            return read_hgnc_table(cache_file), f"cache:{cache_file}", None
        except ValueError:
            cache_file.unlink()  # a corrupt cache is rebuilt below, never used
    if not offline:
        try:
            download_hgnc(cache_file)
            return read_hgnc_table(cache_file), f"download:{HGNC_URL}", None
        except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException, ValueError) as error:
            cache_file.unlink(missing_ok=True)
            reason = f"HGNC download failed ({error})"
    else:
        reason = "offline mode"
    warning = (
        f"No HGNC table ({reason}) and no --hgnc-file/SCRNA_HGNC_FILE: Ensembl ids are not mapped; "
        "gene symbols come from feature_name or the var index only."
    )
    return empty_mapping(), "none", warning

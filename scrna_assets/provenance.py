"""What an output was made from: the input file's fingerprint and the processing parameters.

Written into every published folder (``provenance.json``) so ``--skip-existing`` can tell an
up-to-date dataset from a stale one without reading any data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import polars as pl

from scrna_assets.resources import PipelineSettings

PROVENANCE_FILE = "provenance.json"


def input_fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def quick_hash(path: Path, sample: int = 1 << 20) -> str:
    """sha256 of the size plus the first and last MiB: identifies a file version without reading
    terabytes (a full content hash would cost a whole extra pass over the input)."""
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(sample))
        handle.seek(max(0, path.stat().st_size - sample))
        digest.update(handle.read(sample))
    return digest.hexdigest()


def mapping_digest(mapping: pl.DataFrame) -> str:
    """sha256 of the Ensembl->symbol pairs, so a changed HGNC table makes outputs stale."""
    digest = hashlib.sha256()
    for ensembl, symbol in mapping.select("ensembl_gene_id", "symbol").iter_rows():
        digest.update(f"{ensembl}\t{symbol}\n".encode())
    return digest.hexdigest()


def conversion_parameters(settings: PipelineSettings, hgnc_digest: str) -> dict[str, Any]:
    return {
        "chunk_size": settings.chunk_size,
        "top_genes": settings.top_genes,
        "compression": settings.compression,
        "matrix": settings.matrix,
        "tie_break": settings.tie_break,
        **({"seed": settings.seed} if settings.tie_break == "random" else {}),
        "hgnc_sha256": hgnc_digest,
    }


def split_parameters(settings: PipelineSettings) -> dict[str, Any]:
    kept = {"include_age_ranges": settings.include_age_ranges, "primary_only": settings.primary_only, "license": settings.license}
    if settings.skip_train_test_split:
        return {"skip_train_test_split": True, **kept}
    return {"test_size": settings.test_size, "seed": settings.seed, "split_by": settings.split_by, **kept}


def read_provenance(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_provenance(folder: Path, record: dict[str, Any]) -> None:
    (folder / PROVENANCE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def expected_output_provenance(source: Path, settings: PipelineSettings, hgnc_digest: str) -> dict[str, Any]:
    return {
        "input": input_fingerprint(source),
        "parameters": {**conversion_parameters(settings, hgnc_digest), **split_parameters(settings)},
    }


def is_up_to_date(output_folder: Path, expected: dict[str, Any]) -> bool:
    found = read_provenance(output_folder)
    return found is not None and all(found.get(key) == value for key, value in expected.items())

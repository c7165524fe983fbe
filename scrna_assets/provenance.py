"""What an output was made from, and what its checks said: the one test of "is work needed?".

Every published folder holds ``provenance.json`` (the input file's fingerprint and the processing
parameters); the output folder also gets ``checks.json`` (each check's outcome on that very
publication: the folder is new at each publication). ``stale_reason`` reads them, without reading
any data, for every entry point: ``--skip-existing`` and the sensor.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import polars as pl

from scrna_assets.core.atomic_files import write_bytes_atomic
from scrna_assets.layout import DatasetLayout
from scrna_assets.resources import PipelineSettings
from scrna_assets.settings import CONVERSION, SPLIT
from scrna_assets.steps import OUTPUT_ASSET

PROVENANCE_FILE = "provenance.json"
CHECKS_FILE = "checks.json"


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
    """The settings that change the conversion's output (``settings.Role``), and the HGNC table's digest."""
    return {**settings.model().parameters(CONVERSION), "hgnc_sha256": hgnc_digest}


def split_parameters(settings: PipelineSettings) -> dict[str, Any]:
    return settings.model().parameters(SPLIT)


def read_provenance(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_provenance(folder: Path, record: dict[str, Any]) -> None:
    write_bytes_atomic(folder / PROVENANCE_FILE, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())


def expected_output_provenance(source: Path, settings: PipelineSettings, hgnc_digest: str) -> dict[str, Any]:
    return {
        "input": input_fingerprint(source),
        "parameters": {**conversion_parameters(settings, hgnc_digest), **split_parameters(settings)},
    }


def record_checks(folder: Path, outcomes: dict[str, tuple[bool, str]]) -> None:
    """Write the checks' outcomes (name -> (passed, severity)) into the published folder's ``checks.json``."""
    record = {name: {"passed": passed, "severity": severity} for name, (passed, severity) in outcomes.items()}
    write_bytes_atomic(folder / CHECKS_FILE, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())


def stale_reason(
    layout: DatasetLayout, dataset: str, source: Path, settings: PipelineSettings, hgnc_digest: str, blocking_checks: tuple[str, ...]
) -> str | None:
    """Why this dataset must be processed again, or None when its published output was made from
    this very file version with these parameters, every blocking check passed on it, and it was
    uploaded where the settings say."""
    output = layout.asset_dir(OUTPUT_ASSET, dataset)
    found = read_provenance(output)
    if found is None:
        return "no published output"
    expected = expected_output_provenance(source, settings, hgnc_digest)
    if found.get("input") != expected["input"]:
        return "the output was made from another version of the file"
    if found.get("parameters") != expected["parameters"]:
        return "the output was made with other parameters"
    try:
        checks = json.loads((output / CHECKS_FILE).read_text())
    except (OSError, ValueError):
        checks = {}
    for check in blocking_checks:
        outcome = checks.get(check)
        if outcome is None:
            return f"check {check} has no outcome on the output"
        if not outcome["passed"] and outcome["severity"] == "ERROR":
            return f"blocking check {check} failed on the output"
    if not settings.repo_id:
        return None
    try:
        upload = json.loads(layout.upload_record(dataset).read_text())
    except (OSError, ValueError):
        return "not uploaded"
    wanted = f"{settings.repo_id}-{dataset}" if settings.repo_per_dataset else settings.repo_id
    if upload.get("status") != "uploaded" or upload.get("repo_id") != wanted:
        return f"not uploaded to {wanted}"
    return None

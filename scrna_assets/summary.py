"""The end-of-batch summary: a block for people, and the same rows as JSON and TSV."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from scrna_assets.layout import write_bytes_atomic

SUCCESS, FAILED, SKIPPED = "SUCCESS", "FAILED", "SKIPPED"
RULE = "=" * 60


@dataclass
class DatasetOutcome:
    dataset: str
    input_file: str
    status: str
    message: str = ""
    cells_read: int = 0
    cells_with_age: int = 0
    train_cells: int = 0
    test_cells: int = 0
    seconds: float = 0.0


def render_summary(rows: list[DatasetOutcome], directories: dict[str, str]) -> str:
    counts = {status: sum(r.status == status for r in rows) for status in (SUCCESS, FAILED, SKIPPED)}
    lines = [
        RULE,
        "BATCH SUMMARY",
        RULE,
        f"Total: {len(rows)}  Succeeded: {counts[SUCCESS]}  Failed: {counts[FAILED]}  Skipped: {counts[SKIPPED]}",
        "",
    ]
    marks = {SUCCESS: "✓", FAILED: "✗", SKIPPED: "SKIPPED"}
    for row in rows:
        if row.status == SUCCESS:
            detail = (
                f"{row.cells_read} cells, {row.cells_with_age} with age, "
                f"train {row.train_cells} / test {row.test_cells} ({row.seconds:.1f} s)"
            ) + (f"; {row.message}" if row.message else "")
        else:
            detail = row.message
        lines.append(f"{marks[row.status]} {row.dataset or row.input_file}: {detail}")
    lines += ["", "Directories:"] + [f"  {name + ':':<9} {path}" for name, path in directories.items()]
    return "\n".join(lines)


def write_summary(rows: list[DatasetOutcome], log_dir: Path) -> tuple[Path, Path]:
    """``batch_summary.json`` and ``batch_summary.tsv`` in ``log_dir``, each written atomically."""
    json_path, tsv_path = log_dir / "batch_summary.json", log_dir / "batch_summary.tsv"
    write_bytes_atomic(json_path, (json.dumps([asdict(r) for r in rows], indent=2) + "\n").encode())
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow([f.name for f in fields(DatasetOutcome)])
    for row in rows:
        writer.writerow([" ".join(str(v).split()) for v in asdict(row).values()])
    write_bytes_atomic(tsv_path, buffer.getvalue().encode())
    return json_path, tsv_path

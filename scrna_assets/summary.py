"""The end-of-batch summary: a block for people, and the same rows as JSON and TSV."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

from scrna_assets.core.atomic_files import WriteError, write_bytes_atomic

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


def render_summary(
    rows: list[DatasetOutcome], directories: dict[str, str], warnings: list[str] = (),
    output_dir: str | None = None, repo_id: str | None = None,
) -> str:
    """The block printed at the end of a batch: totals, one line per dataset, the warnings that
    concern every dataset (step 1's), the folders, and how to load a result."""
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
    if warnings:
        lines += ["", "Warnings:"] + [f"  ! {warning}" for warning in warnings]
    lines += ["", "Directories:"] + [f"  {name + ':':<9} {path}" for name, path in directories.items()]
    loaded = next((row for row in rows if row.status == SUCCESS and row.train_cells), None)
    if loaded is not None and output_dir is not None:
        folder = Path(output_dir) / loaded.dataset
        lines += [
            "", f"Load {loaded.dataset}:",
            f"  datasets.load_dataset({str(repo_id or folder)!r})",
            f"  polars.read_parquet({str(folder / '**' / '*.parquet')!r})",
        ]
    return "\n".join(lines)


def _reserve_batch_name(log_dir: Path, started: datetime) -> Path:
    """Claim ``batch_summary-<UTC stamp>-<pid>[-N].json`` with O_EXCL, so no batch overwrites another.

    The pid keeps two processes apart; the ``-2``, ``-3``... suffix keeps apart two batches of the
    same process in the same second. The empty placeholder is replaced by the real file next.
    """
    stamp = started.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")  # naive = local time
    base = f"batch_summary-{stamp}-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        candidate = log_dir / (f"{base}.json" if n == 1 else f"{base}-{n}.json")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"{log_dir}: too many batch summaries named {base}*")


def write_summary(rows: list[DatasetOutcome], log_dir: Path, started: datetime | None = None) -> tuple[Path, Path]:
    """This batch's ``batch_summary-<UTC stamp>-<pid>.{json,tsv}``, then the latest copy ``batch_summary.{json,tsv}``.

    Every batch keeps its own files (never lost to the next batch); the latest copy is replaced
    atomically. Returns the two per-batch paths. ``started`` defaults to now.
    """
    json_bytes = (json.dumps([asdict(r) for r in rows], indent=2) + "\n").encode()
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow([f.name for f in fields(DatasetOutcome)])
    for row in rows:
        writer.writerow([" ".join(str(v).split()) for v in asdict(row).values()])
    tsv_bytes = buffer.getvalue().encode()

    try:
        json_path = _reserve_batch_name(log_dir, started or datetime.now(timezone.utc))
    except OSError as error:
        raise WriteError(error.errno, error.strerror or str(error), str(log_dir / "batch_summary.json")) from error
    tsv_path = json_path.with_suffix(".tsv")
    try:
        write_bytes_atomic(json_path, json_bytes)
    except BaseException:
        with contextlib.suppress(OSError):
            json_path.unlink(missing_ok=True)  # the empty placeholder
        raise
    write_bytes_atomic(tsv_path, tsv_bytes)
    write_bytes_atomic(log_dir / "batch_summary.json", json_bytes)
    write_bytes_atomic(log_dir / "batch_summary.tsv", tsv_bytes)
    return json_path, tsv_path

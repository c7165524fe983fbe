"""Step 3: add the ``age`` column (float64 years, null when the stage is not one point in time)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from scrna_assets.core.ages import parse_age_years, stage_label
from scrna_assets.core.parquet_io import ChunkWriter, chunk_files, iter_chunk_tables

STAGE_LABEL_COLUMN = "development_stage"
STAGE_ID_COLUMN = "development_stage_ontology_term_id"


@dataclass
class AgeResult:
    n_cells: int
    with_age: int
    without_age: int
    age_source: str
    chunk_files: list[Path]
    age_counts: dict[float, int] = field(default_factory=dict)
    unparsed_labels: dict[str, int] = field(default_factory=dict)


def _labels(table: pa.Table) -> tuple[list[str | None], str]:
    """Stage label per cell: ``development_stage``, or where that is absent or null, the label of
    ``development_stage_ontology_term_id``."""
    names = table.column_names
    ids = table.column(STAGE_ID_COLUMN).to_pylist() if STAGE_ID_COLUMN in names else [None] * table.num_rows
    if STAGE_LABEL_COLUMN in names:
        labels = table.column(STAGE_LABEL_COLUMN).to_pylist()
        return [label if label is not None else stage_label(i) for label, i in zip(labels, ids)], STAGE_LABEL_COLUMN
    if STAGE_ID_COLUMN in names:
        return [stage_label(i) for i in ids], STAGE_ID_COLUMN
    return [None] * table.num_rows, "none"


def add_ages(in_folder: Path, out_folder: Path, compression: str, chunk_size: int) -> AgeResult:
    """Read interim chunks one at a time and write them again with ``age`` appended."""
    writer = ChunkWriter(out_folder, compression, chunk_size)
    ages_seen: Counter[float] = Counter()
    unparsed: Counter[str] = Counter()
    n_cells = with_age = 0
    source = "none"
    schema: pa.Schema | None = None
    for table in iter_chunk_tables(in_folder):
        labels, source = _labels(table)
        ages = [parse_age_years(label) for label in labels]
        for label, age in zip(labels, ages):
            if age is None:
                unparsed[str(label)] += 1
            else:
                ages_seen[age] += 1
        age_array = pa.array(ages, type=pa.float64())
        n_cells += table.num_rows
        with_age += table.num_rows - age_array.null_count
        aged = table.append_column("age", age_array)
        schema = aged.schema
        writer.write(aged)
    if schema is None:
        raise ValueError(f"{in_folder}: no parquet chunks to add ages to")
    files = writer.close(schema=schema)
    return AgeResult(
        n_cells=n_cells,
        with_age=with_age,
        without_age=n_cells - with_age,
        age_source=source,
        chunk_files=files,
        age_counts=dict(sorted(ages_seen.items())),
        unparsed_labels=dict(unparsed.most_common(10)),
    )

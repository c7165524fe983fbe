"""Step 3: the donor age (float64 years, null when the stage is not one point in time) of every cell.

The ages are written as a small table per interim chunk (``cell_id``, ``age``; same file names,
same rows, same order) instead of a copy of the chunk with ``age`` appended: rewriting the cell
sentences would cost as much as the conversion. The split joins the two (``iter_aged_batches``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from scrna_assets.core.ages import parse_age_years, stage_label
from scrna_assets.core.parquet_io import chunk_files, iter_chunk_batches, iter_chunk_tables, read_chunk_file, write_chunk_file

STAGE_LABEL_COLUMN = "development_stage"
STAGE_ID_COLUMN = "development_stage_ontology_term_id"
CELL_ID_COLUMN = "cell_id"
AGE_COLUMN = "age"
AGES_SCHEMA = pa.schema([pa.field(CELL_ID_COLUMN, pa.string()), pa.field(AGE_COLUMN, pa.float64())])


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


def add_ages(in_folder: Path, out_folder: Path, compression: str) -> AgeResult:
    """For each interim chunk, write ``out_folder/<same name>`` with its cells' ``cell_id`` and
    ``age``. Only the id and stage columns are read."""
    files = chunk_files(in_folder)
    if not files:
        raise ValueError(f"{in_folder}: no parquet chunks to add ages to")
    available = set(pq.read_schema(files[0]).names)
    wanted = [c for c in (CELL_ID_COLUMN, STAGE_LABEL_COLUMN, STAGE_ID_COLUMN) if c in available]
    out_folder.mkdir(parents=True, exist_ok=True)
    ages_seen: Counter[float] = Counter()
    unparsed: Counter[str] = Counter()
    n_cells = with_age = 0
    source = "none"
    written = []
    for path, table in zip(files, iter_chunk_tables(in_folder, wanted)):
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
        cell_ids = table.column(CELL_ID_COLUMN) if CELL_ID_COLUMN in wanted else pa.nulls(table.num_rows, pa.string())
        written.append(out_folder / path.name)
        write_chunk_file(pa.table([cell_ids, age_array], schema=AGES_SCHEMA), written[-1], compression)
    return AgeResult(
        n_cells=n_cells,
        with_age=with_age,
        without_age=n_cells - with_age,
        age_source=source,
        chunk_files=written,
        age_counts=dict(sorted(ages_seen.items())),
        unparsed_labels=dict(unparsed.most_common(10)),
    )


def iter_aged_batches(chunks_folder: Path, ages_folder: Path) -> Iterator[pa.Table]:
    """The interim chunks in order, as tables of at most 1,024 rows with ``age`` appended (so a
    pass over them holds a batch, not a chunk), after checking that the ages are the ones made
    from these chunks (same files, same cells): a chunk folder converted again since would
    otherwise be mislabelled."""
    chunks, age_files = chunk_files(chunks_folder), chunk_files(ages_folder)
    if [p.name for p in chunks] != [p.name for p in age_files]:
        raise ValueError(
            f"the ages in {ages_folder} ({len(age_files)} files) were not made from {chunks_folder} "
            f"({len(chunks)} files): materialize aged_chunks again"
        )
    for chunk, age_file in zip(chunks, age_files):
        ages = read_chunk_file(age_file)
        mismatch = ValueError(f"{age_file} does not hold the cells of {chunk}: materialize aged_chunks again")
        offset = 0
        for table in iter_chunk_batches(chunk):
            rows = table.num_rows
            if offset + rows > ages.num_rows or (
                CELL_ID_COLUMN in table.column_names
                and not ages.column(CELL_ID_COLUMN).slice(offset, rows).equals(table.column(CELL_ID_COLUMN))
            ):
                raise mismatch
            yield table.append_column(AGE_COLUMN, ages.column(AGE_COLUMN).slice(offset, rows))
            offset += rows
        if offset != ages.num_rows:
            raise mismatch

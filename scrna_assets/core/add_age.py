"""Step 3: the donor age of every cell: ``age`` (float64 years, null when the stage is not one
point in time) and ``age_min`` / ``age_max``, the span ``[age_min, age_max)`` the stage covers
(null where unknown or open-ended; see ``core.ages``).

The ages are written as a small table per interim chunk (``cell_id``, ``age``, ``age_min``,
``age_max``; same file names, same rows, same order) instead of a copy of the chunk with the ages
appended: rewriting the cell sentences would cost as much as the conversion. The split joins the
two (``iter_aged_batches``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from scrna_assets.core.ages import MAX_AGE_YEARS, MIN_AGE_YEARS, OUT_OF_RANGE, StageAge, resolve_stage
from scrna_assets.core.parquet_io import chunk_files, iter_chunk_batches, iter_chunk_tables, read_chunk_file, write_chunk_file

STAGE_LABEL_COLUMN = "development_stage"
STAGE_ID_COLUMN = "development_stage_ontology_term_id"
CELL_ID_COLUMN = "cell_id"
AGE_COLUMN = "age"
AGE_COLUMNS = (AGE_COLUMN, "age_min", "age_max")
AGES_SCHEMA = pa.schema([pa.field(CELL_ID_COLUMN, pa.string()), *(pa.field(name, pa.float64()) for name in AGE_COLUMNS)])
_NOTE_LABELS = 3  # labels quoted per note
_NOTE_LABEL_CHARS = 40


@dataclass
class AgeResult:
    """What ``add_ages`` found. ``with_age`` counts cells with a point age; ``with_bounds`` cells
    without one but with at least ``age_min``; ``label_kinds`` cells per ``StageAge.kind``;
    ``out_of_range`` cells whose stated age fell outside [0, 150) years; ``notes`` are sentences
    for the log."""

    n_cells: int
    with_age: int
    without_age: int
    age_source: str
    chunk_files: list[Path]
    age_counts: dict[float, int] = field(default_factory=dict)
    unparsed_labels: dict[str, int] = field(default_factory=dict)
    label_kinds: dict[str, int] = field(default_factory=dict)
    out_of_range: int = 0
    with_bounds: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class _Tally:
    """Running counts over the chunks."""

    n_cells: int = 0
    with_age: int = 0
    with_bounds: int = 0
    ages: Counter[float] = field(default_factory=Counter)
    unparsed: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    out_of_range: Counter[str] = field(default_factory=Counter)

    def add(self, stage: StageAge, label: str | None) -> None:
        self.n_cells += 1
        self.kinds[stage.kind] += 1
        if stage.age is not None:
            self.with_age += 1
            self.ages[stage.age] += 1
            return
        self.unparsed[str(label)] += 1
        self.with_bounds += stage.age_min is not None
        if stage.kind == OUT_OF_RANGE:
            self.out_of_range[str(label)] += 1


def _column_values(table: pa.Table, name: str) -> list[object]:
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


def _numeric_stage_note(schema: pa.Schema) -> str | None:
    """A numeric ``development_stage`` (an obs column of numbers, not stage labels) is no error:
    its values give no age (kind ``not_text``), and the log says why."""
    if STAGE_LABEL_COLUMN not in schema.names:
        return None
    kind = schema.field(STAGE_LABEL_COLUMN).type
    kind = kind.value_type if pa.types.is_dictionary(kind) else kind
    if any(check(kind) for check in (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal, pa.types.is_boolean)):
        return f"{STAGE_LABEL_COLUMN} is numeric ({kind}): its values give no age"
    return None


def _short(label: str) -> str:
    return label if len(label) <= _NOTE_LABEL_CHARS else label[: _NOTE_LABEL_CHARS - 1] + "\N{HORIZONTAL ELLIPSIS}"


def _out_of_range_note(labels: Counter[str]) -> str:
    quoted = ", ".join(repr(_short(label)) for label, _ in labels.most_common(_NOTE_LABELS))
    more = f" and {len(labels) - _NOTE_LABELS} more labels" if len(labels) > _NOTE_LABELS else ""
    span = f"[{MIN_AGE_YEARS:g}, {MAX_AGE_YEARS:g})"
    return f"{labels.total()} cells: age outside {span} years set to null: {quoted}{more}"


def _age_source(names: list[str]) -> str:
    """The column read first: the term id (what CELLxGENE validates), else the free-text label."""
    return next((name for name in (STAGE_ID_COLUMN, STAGE_LABEL_COLUMN) if name in names), "none")


def add_ages(
    in_folder: Path, out_folder: Path, compression: str, progress: Callable[[int, int], None] | None = None
) -> AgeResult:
    """For each interim chunk, write ``out_folder/<same name>`` with its cells' ``cell_id``,
    ``age``, ``age_min`` and ``age_max``. Only the id and stage columns are read; each cell's
    stage comes from its term id first, its free-text label second (``ages.stage_age``).

    ``progress(cells_done, cells_total)``, if given, is called after each non-empty file
    is written, and after the last (the total comes from the chunks' parquet footers, read only
    then)."""
    files = chunk_files(in_folder)
    if not files:
        raise ValueError(f"{in_folder}: no parquet chunks to add ages to")
    schema = pq.read_schema(files[0])
    wanted = [c for c in (CELL_ID_COLUMN, STAGE_LABEL_COLUMN, STAGE_ID_COLUMN) if c in schema.names]
    out_folder.mkdir(parents=True, exist_ok=True)
    tally = _Tally()
    written = []
    total = sum(pq.read_metadata(path).num_rows for path in files) if progress is not None else 0
    for path, table in zip(files, iter_chunk_tables(in_folder, wanted)):
        pairs = zip(_column_values(table, STAGE_LABEL_COLUMN), _column_values(table, STAGE_ID_COLUMN))
        resolved = [resolve_stage(label, term_id) for label, term_id in pairs]
        for stage, label in resolved:
            tally.add(stage, label)
        ages = [pa.array([getattr(stage, name) for stage, _ in resolved], type=pa.float64()) for name in AGE_COLUMNS]
        cell_ids = table.column(CELL_ID_COLUMN) if CELL_ID_COLUMN in wanted else pa.nulls(table.num_rows, pa.string())
        written.append(out_folder / path.name)
        write_chunk_file(pa.table([cell_ids, *ages], schema=AGES_SCHEMA), written[-1], compression)
        if progress is not None and (table.num_rows or path == files[-1]):  # an empty chunk adds no call
            progress(tally.n_cells, total)
    notes = [note] if (note := _numeric_stage_note(schema)) else []
    if tally.out_of_range:
        notes.append(_out_of_range_note(tally.out_of_range))
    return AgeResult(
        n_cells=tally.n_cells,
        with_age=tally.with_age,
        without_age=tally.n_cells - tally.with_age,
        age_source=_age_source(schema.names),
        chunk_files=written,
        age_counts=dict(sorted(tally.ages.items())),
        unparsed_labels=dict(tally.unparsed.most_common(10)),
        label_kinds=dict(sorted(tally.kinds.items())),
        out_of_range=tally.out_of_range.total(),
        with_bounds=tally.with_bounds,
        notes=notes,
    )


def iter_aged_batches(chunks_folder: Path, ages_folder: Path) -> Iterator[pa.Table]:
    """The interim chunks in order, as tables of at most 1,024 rows with ``age``, ``age_min`` and
    ``age_max`` appended (so a pass over them holds a batch, not a chunk), after checking that the
    ages are the ones made from these chunks (same files, same cells): a chunk folder converted
    again since would otherwise be mislabelled."""
    chunks, age_files = chunk_files(chunks_folder), chunk_files(ages_folder)
    if [p.name for p in chunks] != [p.name for p in age_files]:
        raise ValueError(
            f"the ages in {ages_folder} ({len(age_files)} files) were not made from {chunks_folder} "
            f"({len(chunks)} files): materialize aged_chunks again"
        )
    for chunk, age_file in zip(chunks, age_files):
        ages = read_chunk_file(age_file)
        missing = [name for name in AGE_COLUMNS if name not in ages.column_names]
        if missing:  # written before the bounds existed
            raise ValueError(f"{age_file} lacks {', '.join(missing)}: materialize aged_chunks again")
        mismatch = ValueError(f"{age_file} does not hold the cells of {chunk}: materialize aged_chunks again")
        offset = 0
        for table in iter_chunk_batches(chunk):
            rows = table.num_rows
            if offset + rows > ages.num_rows or (
                CELL_ID_COLUMN in table.column_names
                and not ages.column(CELL_ID_COLUMN).slice(offset, rows).equals(table.column(CELL_ID_COLUMN))
            ):
                raise mismatch
            for name in AGE_COLUMNS:
                table = table.append_column(name, ages.column(name).slice(offset, rows))
            yield table
            offset += rows
        if offset != ages.num_rows:
            raise mismatch

"""Step 4: split aged cells into train and test, by donor or by cell, reproducibly.

Pass 1 reads only the ages, ``donor_id`` and ``is_primary_data`` to decide; pass 2 streams the
chunks once, in batches of 1,024 rows joined with their ages, and routes each row to its side,
while a background thread per side encodes the finished files. Cells without an age are left out
(with ``include_age_ranges``, cells with only age bounds are kept).

Why ``auto`` means ``donor`` whenever there is a donor column, whatever the number of donors: a
cell split puts cells of one donor, and so one age label, on both sides, which is label leakage
for an age model. With one donor the whole dataset lands on one side. Cells are split one by one
only when the file names no donor (or ``--split-by cell`` asks for it), and the output says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scrna_assets.core.add_age import AGE_COLUMNS, iter_aged_batches
from scrna_assets.core.parquet_io import ChunkWriter, chunk_files, iter_chunk_tables

DONOR_COLUMN = "donor_id"
PRIMARY_COLUMN = "is_primary_data"
SPLIT_MODES = ("auto", "donor", "cell")
CELL_MODE_NOTE = "split by cell: cells of one donor may be in both splits"
NOTHING_TO_TRAIN_ON = "no cell has an age: nothing to train on"
# Background threads encoding files (zstd is most of the split's work), per side. One: a second
# train thread made the split of 100,000 cells take 5.14 s instead of 7.11 s (median of 3 alternating
# runs each), but on 1,000,000 cells it took the split's peak to 1,546 MB PSS over the process tree
# (1,803 MB summed RSS), past the 1.5 GB bound.
WRITER_THREADS = 1


@dataclass(frozen=True)
class SplitMode:
    """The mode used (``donor``, ``cell`` or ``none``) and why it was chosen."""

    mode: str
    reason: str

    @property
    def note(self) -> str:
        """What a reader of the output must know about leakage ("" when donors cannot leak)."""
        return f"{CELL_MODE_NOTE} ({self.reason})" if self.mode == "cell" else ""


@dataclass
class SplitResult:
    mode: str
    train_cells: int
    test_cells: int
    without_age: int
    train_files: list[Path] = field(default_factory=list)
    test_files: list[Path] = field(default_factory=list)
    train_donors: int = 0
    test_donors: int = 0
    donors_in_both: int = 0
    mode_reason: str = ""
    kept_by_bounds: int = 0
    """Cells kept for their age bounds alone (no point age; ``include_age_ranges``)."""
    primary_cells: int = 0
    non_primary_cells: int = 0
    non_primary_dropped: int = 0

    @property
    def test_share(self) -> float:
        total = self.train_cells + self.test_cells
        return self.test_cells / total if total else 0.0

    @property
    def mode_note(self) -> str:
        return SplitMode(self.mode, self.mode_reason).note

    @property
    def notes(self) -> list[str]:
        """Sentences the summary, log, metadata and card repeat."""
        found = [self.mode_note]
        if self.train_cells + self.test_cells == 0:
            found.append(NOTHING_TO_TRAIN_ON if not self.non_primary_dropped else "no primary cell has an age: nothing to train on")
        return [note for note in found if note]


def choose_mode(requested: str, has_donor_column: bool) -> SplitMode:
    """``auto`` is ``donor`` whenever a donor column exists, whatever the number of donors."""
    if requested not in SPLIT_MODES:
        raise ValueError(f"--split-by must be one of {', '.join(SPLIT_MODES)}, not {requested!r}")
    if requested == "donor" and not has_donor_column:
        raise ValueError(f"--split-by donor needs a {DONOR_COLUMN!r} column")
    if requested == "cell":
        return SplitMode("cell", "--split-by cell asked")
    if has_donor_column:
        return SplitMode("donor", "--split-by donor asked" if requested == "donor" else f"the file has a {DONOR_COLUMN} column")
    return SplitMode("cell", f"no {DONOR_COLUMN} column")


def test_mask_by_cell(strata: np.ndarray, test_size: float, seed: int) -> np.ndarray:
    """For each stratum (an age, or an (age_min, age_max) row) with n cells, exactly
    floor(n * test_size + 0.5) test cells, chosen uniformly; strata visited in sorted order."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(strata), dtype=bool)
    if not len(strata):
        return mask
    _, inverse = np.unique(strata, axis=0 if strata.ndim == 2 else None, return_inverse=True)
    inverse = inverse.reshape(-1)
    for group in range(int(inverse.max()) + 1):
        members = np.flatnonzero(inverse == group)
        k = math.floor(len(members) * test_size + 0.5)
        mask[rng.choice(members, size=k, replace=False)] = True
    return mask


def test_donors(donors: np.ndarray, test_size: float, seed: int) -> set:
    """Whole donors (ids, or codes in id order), visited in a seeded random order; a donor joins
    test when that brings the test cell count closer to the target. This keeps
    |share - test_size| <= the largest donor's share.
    """
    names, sizes = np.unique(donors, return_counts=True)
    target = test_size * len(donors)
    chosen = set()
    count = 0
    for i in np.random.default_rng(seed).permutation(len(names)):
        if abs(count + sizes[i] - target) < abs(count - target):
            chosen.add(names[i].item())
            count += int(sizes[i])
    return chosen


def _donor_codes(chunks_folder: Path) -> np.ndarray:
    """Each cell's donor as an int32 code, numbered in sorted id order (so the seeded choice over
    codes is the one over ids; a null id counts as ""): 4 bytes per cell whatever the ids' length,
    where an array of the ids themselves grows with the longest id."""
    code_of: dict[str, int] = {}
    pieces = []
    for table in iter_chunk_tables(chunks_folder, [DONOR_COLUMN]):
        ids = pc.fill_null(table.column(DONOR_COLUMN).cast(pa.string()), "").combine_chunks()
        encoded = pc.dictionary_encode(ids)
        chunk_codes = np.array([code_of.setdefault(i, len(code_of)) for i in encoded.dictionary.to_pylist()], dtype=np.int32)
        pieces.append(chunk_codes[encoded.indices.to_numpy(zero_copy_only=False)])
    rank = np.empty(len(code_of), dtype=np.int32)
    rank[np.argsort(np.array(list(code_of), dtype=object), kind="stable")] = np.arange(len(code_of), dtype=np.int32)
    return rank[np.concatenate(pieces)] if pieces else np.empty(0, dtype=np.int32)


@dataclass
class _CellFacts:
    """The full-length columns pass 1 holds: a few bytes per cell, never the sentences."""

    ages: np.ndarray  # float64, NaN for no point age
    age_min: np.ndarray  # float64, NaN for no lower bound
    age_max: np.ndarray  # float64, NaN for no upper bound
    donors: np.ndarray | None  # int32 codes, None without a donor column
    primary: np.ndarray | None  # int8: 1 primary, 0 not, -1 unknown; None without the column
    chunk_ends: list[int] = field(default_factory=list)  # cells up to the end of each chunk


def _float_column(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    return table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)


def _read_cell_facts(chunks_folder: Path, ages_folder: Path) -> _CellFacts:
    """Ages, bounds, donor codes and primary flags of every cell, checked to be of the same cells."""
    age_files = chunk_files(ages_folder)
    present = set(pq.read_schema(age_files[0]).names) if age_files else set()
    tables = list(iter_chunk_tables(ages_folder, [c for c in AGE_COLUMNS if c in present]))
    ages, lows, highs = ([_float_column(t, name) for t in tables] for name in AGE_COLUMNS)
    joined = [np.concatenate(parts) if parts else np.empty(0) for parts in (ages, lows, highs)]
    files = chunk_files(chunks_folder)
    names = set(pq.read_schema(files[0]).names) if files else set()
    donors = _donor_codes(chunks_folder) if DONOR_COLUMN in names else None
    primary = None
    if PRIMARY_COLUMN in names:
        flags = [pc.fill_null(t.column(PRIMARY_COLUMN).cast(pa.int8()), -1).to_numpy() for t in iter_chunk_tables(chunks_folder, [PRIMARY_COLUMN])]
        primary = np.concatenate(flags).astype(np.int8) if flags else np.empty(0, np.int8)
    for column in (donors, primary):
        if column is not None and len(column) != len(joined[0]):
            raise ValueError(
                f"{ages_folder} holds {len(joined[0])} ages for {len(column)} cells in {chunks_folder}: materialize aged_chunks again"
            )
    ends = np.cumsum([t.num_rows for t in tables]).tolist()
    return _CellFacts(joined[0], joined[1], joined[2], donors, primary, ends)


def split_chunks(
    chunks_folder: Path,
    ages_folder: Path,
    train_folder: Path,
    test_folder: Path | None,
    test_size: float,
    seed: int,
    split_by: str,
    compression: str,
    chunk_size: int,
    include_age_ranges: bool = False,
    primary_only: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SplitResult:
    """Write train and test chunk folders from the interim chunks and their ages (``add_ages``);
    with ``test_folder`` None, every kept cell goes to ``train_folder`` (no split).

    Kept: cells with a point age, or with ``include_age_ranges`` also cells with only a lower
    bound; with ``primary_only``, cells marked ``is_primary_data == False`` are dropped first.

    ``progress(cells_done, cells_total)``, if given, is called once per input chunk routed, in
    input cells (kept or not; total = every input cell), the last call, ``(total, total)``, only
    once every output file is on disk."""
    facts = _read_cell_facts(chunks_folder, ages_folder)
    aged = ~np.isnan(facts.ages)
    kept = aged | ~np.isnan(facts.age_min) if include_age_ranges else aged.copy()
    non_primary = facts.primary == 0 if facts.primary is not None else np.zeros(len(kept), dtype=bool)
    dropped = kept & non_primary if primary_only else np.zeros(len(kept), dtype=bool)
    kept &= ~dropped
    choice = choose_mode(split_by, facts.donors is not None) if test_folder is not None else SplitMode("none", "--skip-train-test-split")
    is_test = np.zeros(len(kept), dtype=bool)
    if choice.mode == "donor":
        kept_donors = facts.donors[kept]
        chosen = test_donors(kept_donors, test_size, seed)
        is_test[kept] = np.isin(kept_donors, list(chosen))
    elif choice.mode == "cell":
        strata = (
            np.column_stack([facts.age_min[kept], np.nan_to_num(facts.age_max[kept], nan=np.inf)])
            if include_age_ranges else facts.ages[kept]
        )
        is_test[kept] = test_mask_by_cell(strata, test_size, seed)

    with ExitStack() as writers:
        train = writers.enter_context(ChunkWriter(train_folder, compression, chunk_size, workers=WRITER_THREADS))
        test = writers.enter_context(ChunkWriter(test_folder, compression, chunk_size, workers=WRITER_THREADS)) if test_folder is not None else None
        offset = 0
        schema = None
        total = len(kept)
        ends = iter(end for end in dict.fromkeys(facts.chunk_ends) if end < total)  # an empty chunk adds no call
        next_end = next(ends, None)
        for table in iter_aged_batches(chunks_folder, ages_folder):
            n = table.num_rows
            rows_test = is_test[offset : offset + n]
            rows_kept = kept[offset : offset + n]
            train.write(table.filter(pa.array(rows_kept & ~rows_test)))
            if test is not None:
                test.write(table.filter(pa.array(rows_test)))
            schema = table.schema
            offset += n
            while progress is not None and next_end is not None and next_end <= offset:
                progress(next_end, total)
                next_end = next(ends, None)
        train_files = train.close(schema)
        test_files = test.close(schema) if test is not None else []
    if progress is not None:
        progress(total, total)
    result = SplitResult(
        mode=choice.mode,
        mode_reason=choice.reason,
        train_cells=int((kept & ~is_test).sum()),
        test_cells=int(is_test.sum()),
        without_age=int((~aged).sum()),
        kept_by_bounds=int((kept & ~aged).sum()),
        train_files=train_files,
        test_files=test_files,
        primary_cells=int((facts.primary == 1).sum()) if facts.primary is not None else 0,
        non_primary_cells=int(non_primary.sum()),
        non_primary_dropped=int(dropped.sum()),
    )
    if facts.donors is not None:
        train_set = set(np.unique(facts.donors[kept & ~is_test]).tolist())
        test_set = set(np.unique(facts.donors[is_test]).tolist())
        result.train_donors, result.test_donors = len(train_set), len(test_set)
        result.donors_in_both = len(train_set & test_set)
    return result

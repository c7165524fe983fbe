"""Step 4: split aged cells into train and test, by donor or by cell, reproducibly.

Pass 1 reads only the ages and ``donor_id`` to decide; pass 2 streams the chunks once, in
batches of 1,024 rows joined with their ages, and routes each row to its side, while a
background thread per side encodes the finished files. Cells without an age are left out.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scrna_assets.core.add_age import AGE_COLUMN, iter_aged_batches
from scrna_assets.core.parquet_io import ChunkWriter, chunk_files, iter_chunk_tables

DONOR_COLUMN = "donor_id"
SPLIT_MODES = ("auto", "donor", "cell")
# Background threads encoding files (zstd is most of the split's work), per side. A second train
# thread saved ~1 s per 100,000 cells but added ~150 MB, which took `run-all` on 1,000,000 cells
# past 1.5 GB peak RSS.
WRITER_THREADS = 1


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

    @property
    def test_share(self) -> float:
        total = self.train_cells + self.test_cells
        return self.test_cells / total if total else 0.0


def choose_mode(requested: str, donors: np.ndarray | None, test_size: float) -> str:
    """``auto`` means donor when there is a donor column and n_donors * test_size >= 1."""
    if requested not in SPLIT_MODES:
        raise ValueError(f"--split-by must be one of {', '.join(SPLIT_MODES)}, not {requested!r}")
    if requested == "donor" and donors is None:
        raise ValueError(f"--split-by donor needs a {DONOR_COLUMN!r} column")
    if requested != "auto":
        return requested
    if donors is not None and len(np.unique(donors)) * test_size >= 1:
        return "donor"
    return "cell"


def test_mask_by_cell(ages: np.ndarray, test_size: float, seed: int) -> np.ndarray:
    """For each age with n cells, exactly floor(n * test_size + 0.5) test cells, chosen uniformly."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(ages), dtype=bool)
    for age in np.unique(ages):
        members = np.flatnonzero(ages == age)
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


def _read_split_columns(chunks_folder: Path, ages_folder: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Ages (NaN for null) and donor codes of every cell: the only full-length columns we hold."""
    ages = [t.column(AGE_COLUMN).to_numpy(zero_copy_only=False).astype(np.float64) for t in iter_chunk_tables(ages_folder, [AGE_COLUMN])]
    age_array = np.concatenate(ages) if ages else np.empty(0)
    files = chunk_files(chunks_folder)
    if not files or DONOR_COLUMN not in pq.read_schema(files[0]).names:
        return age_array, None
    donor_array = _donor_codes(chunks_folder)
    if len(donor_array) != len(age_array):
        raise ValueError(
            f"{ages_folder} holds {len(age_array)} ages for {len(donor_array)} cells in {chunks_folder}: materialize aged_chunks again"
        )
    return age_array, donor_array


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
) -> SplitResult:
    """Write train and test chunk folders from the interim chunks and their ages (``add_ages``);
    with ``test_folder`` None, every aged cell goes to ``train_folder`` (no split)."""
    ages, donors = _read_split_columns(chunks_folder, ages_folder)
    aged = ~np.isnan(ages)
    aged_donors = donors[aged] if donors is not None else None
    mode = choose_mode(split_by, aged_donors, test_size) if test_folder is not None else "none"
    is_test = np.zeros(len(ages), dtype=bool)
    train_donor_set: set[int] = set()
    test_donor_set: set[int] = set()
    if mode == "donor":
        test_donor_set = test_donors(aged_donors, test_size, seed)
        is_test[aged] = np.isin(aged_donors, list(test_donor_set))
        train_donor_set = set(np.unique(aged_donors[~is_test[aged]]).tolist())
    elif mode == "cell":
        is_test[aged] = test_mask_by_cell(ages[aged], test_size, seed)

    with ExitStack() as writers:
        train = writers.enter_context(ChunkWriter(train_folder, compression, chunk_size, workers=WRITER_THREADS))
        test = writers.enter_context(ChunkWriter(test_folder, compression, chunk_size, workers=WRITER_THREADS)) if test_folder is not None else None
        offset = 0
        schema = None
        for table in iter_aged_batches(chunks_folder, ages_folder):
            n = table.num_rows
            rows_test = is_test[offset : offset + n]
            rows_aged = aged[offset : offset + n]
            train.write(table.filter(pa.array(rows_aged & ~rows_test)))
            if test is not None:
                test.write(table.filter(pa.array(rows_test)))
            schema = table.schema
            offset += n
        train_files = train.close(schema)
        test_files = test.close(schema) if test is not None else []
    result = SplitResult(
        mode=mode,
        train_cells=int((aged & ~is_test).sum()),
        test_cells=int(is_test.sum()),
        without_age=int((~aged).sum()),
        train_files=train_files,
        test_files=test_files,
        train_donors=len(train_donor_set),
        test_donors=len(test_donor_set),
    )
    if mode != "donor" and donors is not None:
        result.train_donors = len(np.unique(donors[aged & ~is_test]))
        result.test_donors = len(np.unique(donors[is_test]))
    return result

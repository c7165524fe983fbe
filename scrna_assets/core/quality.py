"""Facts about a published dataset that its quality checks judge, read column by column.

Only small columns are read (donor, age, gene count), one chunk file at a time.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from scrna_assets.core.parquet_io import chunk_files

REQUIRED_COLUMNS = {
    "cell_id": pa.string(),
    "dataset": pa.string(),
    "cell_sentence": pa.string(),
    "n_genes": pa.int32(),
    "age": pa.float64(),
    "age_min": pa.float64(),
    "age_max": pa.float64(),
}
SPLITS = ("train", "test")


@dataclass
class SplitFacts:
    cells: dict[str, int] = field(default_factory=dict)
    donors: dict[str, set[str]] = field(default_factory=dict)
    donor_cells: Counter = field(default_factory=Counter)
    age_cells: Counter = field(default_factory=Counter)
    bounds_cells: Counter = field(default_factory=Counter)
    """Cells per (age_min, age_max): the strata of a cell split with ``include_age_ranges``."""
    empty_sentences: int = 0
    schema_problems: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.cells.values())

    @property
    def test_share(self) -> float:
        return self.cells.get("test", 0) / self.total if self.total else 0.0

    @property
    def largest_donor_share(self) -> float:
        return max(self.donor_cells.values()) / self.total if self.donor_cells and self.total else 0.0

    def expected_cell_mode_test_cells(self, test_size: float, by_bounds: bool = False) -> int:
        """The contract's exact count for ``cell`` mode: floor(n * test_size + 0.5) per age, or
        per (age_min, age_max) when cells with age bounds only were kept."""
        strata = self.bounds_cells if by_bounds else self.age_cells
        return sum(math.floor(n * test_size + 0.5) for n in strata.values())


def _check_schema(path: Path, max_rows: int | None, problems: list[str]) -> pq.ParquetFile | None:
    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # any unreadable file is a finding, not a crash
        problems.append(f"{path.name}: unreadable ({error})")
        return None
    schema = parquet.schema_arrow
    for name, kind in REQUIRED_COLUMNS.items():
        if name not in schema.names:
            problems.append(f"{path.name}: missing column {name}")
        elif schema.field(name).type != kind:
            problems.append(f"{path.name}: column {name} is {schema.field(name).type}, expected {kind}")
    if max_rows is not None and parquet.metadata.num_rows > max_rows:
        problems.append(f"{path.name}: {parquet.metadata.num_rows} rows, more than the chunk size {max_rows}")
    return parquet


def split_facts(folder: Path, max_rows: int | None = None) -> SplitFacts:
    """Facts over ``folder/{train,test}/chunks`` (or ``folder/chunks`` for an unsplit dataset)."""
    facts = SplitFacts()
    splits = [s for s in SPLITS if (folder / s / "chunks").is_dir()] or ["."]
    for split in splits:
        name = "train" if split == "." else split
        facts.cells[name] = 0
        facts.donors[name] = set()
        for path in chunk_files(folder / split / "chunks"):
            parquet = _check_schema(path, max_rows, facts.schema_problems)
            if parquet is None:
                continue
            wanted = [c for c in ("donor_id", "age", "age_min", "age_max", "n_genes") if c in parquet.schema_arrow.names]
            table = parquet.read(columns=wanted)
            facts.cells[name] += table.num_rows
            if "donor_id" in wanted:
                donors = table.column("donor_id").cast(pa.string()).to_pylist()
                facts.donors[name].update(d for d in donors if d is not None)
                facts.donor_cells.update(donors)
            if "age" in wanted:
                facts.age_cells.update(table.column("age").to_pylist())
            if "age_min" in wanted and "age_max" in wanted:
                facts.bounds_cells.update(zip(table.column("age_min").to_pylist(), table.column("age_max").to_pylist()))
            if "n_genes" in wanted:
                facts.empty_sentences += table.column("n_genes").to_pylist().count(0)
    return facts

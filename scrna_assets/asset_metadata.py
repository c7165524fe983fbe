"""What the Dagster UI shows about each asset beyond its figures: kinds, code versions, Dagster's
standard table metadata (``dagster/row_count``, ``dagster/column_schema``) and the age chart."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import MetadataValue, TableColumn, TableSchema

from scrna_assets.steps import AGED_CHUNKS, HF_UPLOAD, HGNC_MAPPER, PARQUET_CHUNKS, TRAIN_TEST_SPLITS

# The icons on each asset in the UI (Dagster allows at most ten kinds per asset).
KINDS: dict[str, set[str]] = {
    HGNC_MAPPER: {"polars", "parquet"},
    PARQUET_CHUNKS: {"parquet"},
    AGED_CHUNKS: {"parquet"},
    TRAIN_TEST_SPLITS: {"parquet"},
    HF_UPLOAD: {"huggingface"},
}

# Dagster marks a materialization stale ("code version changed") when the version here differs from
# the one it was made with. Bumped by hand, on purpose: BUMP an asset's version (any new string; we
# count up) in the same change as any edit that can change the bytes or the meaning of its output:
# the core function it calls (and what that imports), its parameters' defaults, its output columns
# or file layout. Do NOT bump for comments, refactors, logging or speed-ups that leave the output as
# it is: re-making large datasets for those would be a waste, which a hash of source files would cause.
CODE_VERSIONS: dict[str, str] = {
    HGNC_MAPPER: "1",  # core/hgnc.py
    PARQUET_CHUNKS: "1",  # core/convert.py and the readers, gene tokens and sentences it uses
    AGED_CHUNKS: "1",  # core/add_age.py, core/ages.py
    TRAIN_TEST_SPLITS: "1",  # core/split.py, core/dataset_card.py
    HF_UPLOAD: "1",  # core/hf_upload.py
}

ROW_COUNT = "dagster/row_count"
COLUMN_SCHEMA = "dagster/column_schema"


def column_schema(schema: pa.Schema) -> TableSchema:
    """The Columns tab: each column's name and its Arrow type as a string."""
    return TableSchema(columns=[TableColumn(name=field.name, type=str(field.type)) for field in schema])


def table_metadata(rows: int, schema: pa.Schema | None) -> dict[str, Any]:
    """Dagster's documented keys for the row count and column schema panels."""
    metadata: dict[str, Any] = {ROW_COUNT: MetadataValue.int(rows)}
    if schema is not None:
        metadata[COLUMN_SCHEMA] = MetadataValue.table_schema(column_schema(schema))
    return metadata


def chunk_table_metadata(files: list[Path]) -> dict[str, Any]:
    """Rows of all chunk files (parquet footers, no data read) and the schema of the first one."""
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    return table_metadata(rows, pq.read_schema(files[0]) if files else None)


CHART_ROWS = 60
BAR_WIDTH = 40
_EIGHTHS = " ▏▎▍▌▋▊▉"
_NICE_STEPS = (1, 2, 5)


def _bins(age_counts: dict[float, int]) -> list[tuple[str, int]]:
    """(label, cells) per distinct age, or per age band of a round width (0.1, 0.2, 0.5, 1, 2, 5,
    10, ... years) when there are more than CHART_ROWS distinct ages; a band [lo, hi) is "lo–hi"."""
    ages = sorted(age_counts)
    if len(ages) <= CHART_ROWS:
        return [(f"{age:g}", age_counts[age]) for age in ages]
    exact = {age: Fraction(repr(float(age))) for age in ages}  # 0.3 is in [0.3, 0.4), as printed
    exponent = -1
    while True:
        for step in _NICE_STEPS:
            width = step * Fraction(10) ** exponent
            start, end = math.floor(exact[ages[0]] / width), math.floor(exact[ages[-1]] / width)
            if end - start + 1 <= CHART_ROWS:
                counts = [0] * (end - start + 1)
                for age, cells in age_counts.items():
                    counts[math.floor(exact[age] / width) - start] += cells
                return [(f"{float((start + i) * width):g}–{float((start + i + 1) * width):g}", n) for i, n in enumerate(counts)]
        exponent += 1


def _bar(cells: int, most: int) -> str:
    """A bar of BAR_WIDTH characters at most, in eighths of a block; any cell shows."""
    eighths = max(1, round(cells * BAR_WIDTH * 8 / most)) if cells else 0
    return "█" * (eighths // 8) + (_EIGHTHS[eighths % 8] if eighths % 8 else "")


def age_chart(age_counts: dict[float, int]) -> str:
    """A horizontal bar chart of cells per age (Markdown: a heading line and a code block, so the
    columns line up in the UI). At most CHART_ROWS bars."""
    rows = _bins(age_counts)
    if not rows:
        return "No cell has an age."
    binned = len(rows) != len(age_counts)
    most = max(n for _, n in rows)
    label_width = max(len("age"), *(len(label) for label, _ in rows))
    title = f"Cells per age (years){', in bands [lo, hi)' if binned else ''}: {sum(n for _, n in rows)} cells, {len(age_counts)} distinct ages"
    lines = [title, "", "```", f"{'age':>{label_width}} │ cells"]
    lines += [f"{label:>{label_width}} │{_bar(n, most):<{BAR_WIDTH}} {n}" for label, n in rows]
    return "\n".join(lines + ["```"])

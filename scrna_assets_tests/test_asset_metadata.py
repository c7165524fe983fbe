"""The age chart, the column schema and the row count, without a Dagster run."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from scrna_assets.asset_metadata import CHART_ROWS, age_chart, chunk_table_metadata, column_schema


def bars(chart: str) -> list[tuple[str, str, int]]:
    """(label, bar, cells) of each chart line."""
    rows = []
    for line in chart.splitlines()[4:-1]:
        label, rest = line.split(" │")
        bar, cells = rest.rsplit(" ", 1)
        rows.append((label.strip(), bar.rstrip(), int(cells)))
    return rows


def test_one_bar_per_age_scaled_to_the_largest_in_eighths() -> None:
    chart = age_chart({21.0: 100, 20.0: 5, 35.5: 3, 0.3: 1})
    assert chart.splitlines() == [
        "Cells per age (years): 109 cells, 4 distinct ages",
        "",
        "```",
        " age │ cells",
        " 0.3 │▍                                        1",
        "  20 │██                                       5",
        "  21 │████████████████████████████████████████ 100",
        "35.5 │█▎                                       3",
        "```",
    ]


def test_a_single_cell_among_many_still_shows() -> None:
    assert bars(age_chart({30.0: 1, 31.0: 1_000_000})) == [("30", "▏", 1), ("31", "█" * 40, 1_000_000)]


def test_more_than_sixty_ages_are_banded_by_a_round_width() -> None:
    counts = {float(age): 1 for age in range(0, 100)} | {0.5: 2, 99.9: 3}  # 102 distinct ages
    rows = bars(age_chart(counts))
    assert len(rows) == 50 <= CHART_ROWS
    assert [(label, cells) for label, _, cells in rows[:2]] == [("0–2", 4), ("2–4", 2)]
    assert (rows[-1][0], rows[-1][2]) == ("98–100", 5)
    assert sum(cells for _, _, cells in rows) == sum(counts.values())
    assert age_chart(counts).splitlines()[0] == "Cells per age (years), in bands [lo, hi): 105 cells, 102 distinct ages"


def test_bands_follow_the_printed_age_and_keep_empty_bands() -> None:
    counts = {round(i * 0.1, 1): 1 for i in range(61)}  # 0, 0.1, ..., 6: 61 distinct ages
    rows = bars(age_chart(counts))
    assert [(label, cells) for label, _, cells in rows[:3]] == [("0–0.2", 2), ("0.2–0.4", 2), ("0.4–0.6", 2)]
    assert (rows[-1][0], rows[-1][2]) == ("6–6.2", 1) and len(rows) == 31
    gap = bars(age_chart({float(a): 1 for a in range(61)} | {200.0: 7}))
    assert len(gap) == 41 and [cells for _, _, cells in gap[-2:]] == [0, 7]  # ..., 195-200 empty, 200-205


def test_no_age_at_all() -> None:
    assert age_chart({}) == "No cell has an age."


def test_row_count_of_all_files_and_schema_of_the_first(tmp_path: Path) -> None:
    table = pa.table({"cell_id": pa.array(["a", "b"]), "n_genes": pa.array([1, 2], pa.int32()), "age": [1.0, None]})
    pq.write_table(table, tmp_path / "chunk_0000.parquet")
    pq.write_table(table.slice(0, 1), tmp_path / "chunk_0001.parquet")
    metadata = chunk_table_metadata(sorted(tmp_path.glob("chunk_*.parquet")))
    assert metadata["dagster/row_count"].value == 3
    assert [(c.name, c.type) for c in metadata["dagster/column_schema"].value.columns] == [
        ("cell_id", "string"), ("n_genes", "int32"), ("age", "double"),
    ]
    assert column_schema(table.schema) == metadata["dagster/column_schema"].value
    empty = chunk_table_metadata([])
    assert empty["dagster/row_count"].value == 0 and "dagster/column_schema" not in empty

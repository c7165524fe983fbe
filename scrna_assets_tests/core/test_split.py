"""Tests for ``scrna_assets.core.split``: reproducible train/test splits by cell or by donor."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scrna_assets.core.parquet_io import ChunkWriter
from scrna_assets.core.split import (
    SplitMode,
    SplitResult,
    _donor_codes,
    choose_mode,
    split_chunks,
    test_donors as pick_test_donors,
    test_mask_by_cell as pick_test_cells,
)

# The module's functions start with ``test_``: imported under other names so pytest won't collect them.


def expected_test_count(n: int, test_size: float) -> int:
    return math.floor(n * test_size + 0.5)


# -- choose_mode ------------------------------------------------------------------------------


def test_choose_mode_auto_is_donor_whenever_there_is_a_donor_column() -> None:
    """auto -> donor with a donor column whatever the number of donors; cell only without one."""
    assert choose_mode("auto", True) == SplitMode("donor", "the file has a donor_id column")
    assert choose_mode("auto", False) == SplitMode("cell", "no donor_id column")
    assert choose_mode("auto", False).note == "split by cell: cells of one donor may be in both splits (no donor_id column)"
    assert choose_mode("auto", True).note == ""


def test_choose_mode_explicit() -> None:
    """Explicit modes are honoured; donor without donors and unknown modes are errors."""
    assert choose_mode("cell", True) == SplitMode("cell", "--split-by cell asked")
    assert choose_mode("cell", True).note == "split by cell: cells of one donor may be in both splits (--split-by cell asked)"
    assert choose_mode("donor", True) == SplitMode("donor", "--split-by donor asked")
    with pytest.raises(ValueError, match="donor_id"):
        choose_mode("donor", False)
    with pytest.raises(ValueError, match="--split-by"):
        choose_mode("random", True)


# -- cell mode --------------------------------------------------------------------------------


@pytest.mark.parametrize("test_size", [0.0, 0.1, 0.2, 0.25, 0.3, 0.5, 0.75, 1.0])
def test_cell_mask_exact_count_per_age(test_size: float) -> None:
    """Per age value with n cells, exactly floor(n * test_size + 0.5) cells go to test."""
    sizes = {20.0: 1, 30.0: 2, 40.5: 3, 50.0: 5, 60.0: 7, 70.0: 10, 0.25: 33}
    ages = np.concatenate([np.full(n, age) for age, n in sizes.items()])
    np.random.default_rng(0).shuffle(ages)
    mask = pick_test_cells(ages, test_size, seed=1)
    assert mask.dtype == bool and mask.shape == ages.shape
    got = {age: int(mask[ages == age].sum()) for age in sizes}
    assert got == {age: expected_test_count(n, test_size) for age, n in sizes.items()}


def test_cell_mask_pinned_counts() -> None:
    """Hand-computed rounding at test_size 0.25 (half rounds up: 2 cells -> 1)."""
    ages = np.repeat([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [1, 2, 3, 5, 10, 7])
    mask = pick_test_cells(ages, 0.25, seed=0)
    assert [int(mask[ages == a].sum()) for a in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)] == [0, 1, 1, 1, 3, 2]


def test_cell_mask_seeded() -> None:
    """Same seed -> same mask; different seed -> different mask (on 2,000 cells)."""
    ages = np.random.default_rng(3).integers(20, 80, size=2000).astype(np.float64)
    a = pick_test_cells(ages, 0.2, seed=42)
    assert np.array_equal(a, pick_test_cells(ages, 0.2, seed=42))
    assert not np.array_equal(a, pick_test_cells(ages, 0.2, seed=43))


def test_cell_mask_uses_every_member() -> None:
    """The choice within an age is random, not the first k cells: over seeds every cell is picked."""
    ages = np.full(10, 33.0)
    picked = np.zeros(10, dtype=int)
    for seed in range(200):
        picked += pick_test_cells(ages, 0.3, seed)
    assert picked.sum() == 600
    assert (picked > 0).all()


# -- donor mode -------------------------------------------------------------------------------


def test_donor_split_bound_on_many_configurations() -> None:
    """|test share - test_size| <= largest donor's share, whole donors, deterministic per seed."""
    for config in range(300):
        rng = np.random.default_rng(config)
        n_donors = int(rng.integers(1, 30))
        sizes = rng.integers(1, 200, size=n_donors) if config % 2 else rng.geometric(0.02, size=n_donors)
        donors = np.repeat([f"donor{i:02d}" for i in range(n_donors)], sizes)
        rng.shuffle(donors)
        test_size = float(rng.choice([0.05, 0.1, 0.2, 0.25, 1 / 3, 0.5, 0.8]))
        seed = int(rng.integers(0, 1_000_000))
        chosen = pick_test_donors(donors, test_size, seed)
        assert chosen == pick_test_donors(donors, test_size, seed)
        assert chosen <= set(donors.tolist())
        assert all(isinstance(name, str) for name in chosen)
        share = np.isin(donors, list(chosen)).mean()
        largest = sizes.max() / len(donors)
        assert abs(share - test_size) <= largest + 1e-12, (config, n_donors, test_size, share, largest)


def test_donor_split_equal_donors_exact() -> None:
    """With 10 equal donors and test_size 0.3, exactly 3 donors go to test; the seed picks which."""
    donors = np.repeat([f"d{i}" for i in range(10)], 4)
    picks = {frozenset(pick_test_donors(donors, 0.3, seed)) for seed in range(20)}
    assert all(len(p) == 3 for p in picks)
    assert len(picks) > 1


# -- split_chunks end to end ------------------------------------------------------------------


def make_input(root: Path, slices: tuple[tuple[int, int], ...] = ((0, 13), (13, 13), (13, 40)), donors: bool = True) -> pa.Table:
    """Interim chunks in ``root/in`` (13, 0 and 27 rows by default) and their ages in
    ``root/ages``, with nulls in age; returns the whole input table with the age columns last."""
    rng = np.random.default_rng(2024)
    n = 40
    donor_ids = [f"D{int(i)}" for i in rng.integers(0, 8, size=n)]
    ages = [None if rng.random() < 0.2 else float(rng.choice([25.0, 40.0, 0.5, 71.0])) for _ in range(n)]
    table = pa.table(
        {
            "cell_id": pa.array([f"cell{i:03d}" for i in range(n)], type=pa.string()),
            **({"donor_id": pa.array(donor_ids, type=pa.string())} if donors else {}),
            "cell_sentence": pa.array([f"G{i % 5} G{i % 3}" for i in range(n)], type=pa.string()),
            "n_genes": pa.array([2] * n, type=pa.int32()),
            "age": pa.array(ages, type=pa.float64()),
        }
    )
    table = with_bounds(table)
    (root / "in").mkdir(parents=True)
    (root / "ages").mkdir(parents=True)
    for index, (start, stop) in enumerate(slices):
        part = table.slice(start, stop - start)
        pq.write_table(part.drop_columns(["age", "age_min", "age_max"]), root / "in" / f"chunk_{index:04d}.parquet")
        pq.write_table(part.select(["cell_id", "age", "age_min", "age_max"]), root / "ages" / f"chunk_{index:04d}.parquet")
    return table


def with_bounds(ages: pa.Table) -> pa.Table:
    """``age_min``/``age_max`` appended as a point age's year, [age, age + 1); none without an age."""
    values = ages.column("age").to_pylist()
    low = pa.array(values, pa.float64())
    high = pa.array([None if a is None else a + 1 for a in values], pa.float64())
    return ages.append_column("age_min", low).append_column("age_max", high)


def read_folder(folder: Path) -> tuple[pa.Table, list[int]]:
    files = sorted(folder.glob("chunk_*.parquet"))
    tables = [pq.read_table(f) for f in files]
    return pa.concat_tables(tables), [t.num_rows for t in tables]


def run_split(tmp_path: Path, name: str, **overrides: object) -> tuple[SplitResult, Path, Path | None]:
    kwargs: dict[str, object] = dict(
        test_size=0.25, seed=7, split_by="cell", compression="zstd", chunk_size=4
    )
    kwargs.update(overrides)
    train = tmp_path / name / "train"
    test = tmp_path / name / "test" if kwargs.pop("with_test", True) else None
    result = split_chunks(tmp_path / "in", tmp_path / "ages", train, test, **kwargs)  # type: ignore[arg-type]
    return result, train, test


def assert_order_preserved(part: pa.Table, source: pa.Table) -> None:
    position = {cid: i for i, cid in enumerate(source.column("cell_id").to_pylist())}
    indices = [position[c] for c in part.column("cell_id").to_pylist()]
    assert indices == sorted(indices)


def assert_chunk_sizes(sizes: list[int], chunk_size: int) -> None:
    assert sizes and all(s <= chunk_size for s in sizes)
    assert all(s == chunk_size for s in sizes[:-1])


@pytest.mark.parametrize("split_by", ["cell", "donor", "auto"])
def test_split_chunks_end_to_end(tmp_path: Path, split_by: str) -> None:
    """Null ages dropped, every aged cell in exactly one side, rows intact and in order,
    chunks of at most chunk_size rows, donor splits never share a donor."""
    source = make_input(tmp_path)
    aged_ids = {r["cell_id"] for r in source.to_pylist() if r["age"] is not None}
    n_null = sum(1 for a in source.column("age").to_pylist() if a is None)
    assert 0 < n_null < source.num_rows

    result, train_dir, test_dir = run_split(tmp_path, "out", split_by=split_by)
    assert test_dir is not None
    train, train_sizes = read_folder(train_dir)
    test, test_sizes = read_folder(test_dir)
    assert result.train_files == sorted(train_dir.glob("chunk_*.parquet"))
    assert result.test_files == sorted(test_dir.glob("chunk_*.parquet"))

    assert train.schema == source.schema and test.schema == source.schema
    train_ids, test_ids = set(train.column("cell_id").to_pylist()), set(test.column("cell_id").to_pylist())
    assert train.num_rows > 0 and test.num_rows > 0
    assert train_ids.isdisjoint(test_ids)
    assert train_ids | test_ids == aged_ids
    assert train.num_rows + test.num_rows == len(aged_ids)
    assert (result.train_cells, result.test_cells, result.without_age) == (train.num_rows, test.num_rows, n_null)

    by_id = {r["cell_id"]: r for r in source.to_pylist()}
    for part in (train, test):
        assert all(by_id[r["cell_id"]] == r for r in part.to_pylist())  # whole rows, unchanged
        assert_order_preserved(part, source)
    assert_chunk_sizes(train_sizes, 4)
    assert_chunk_sizes(test_sizes, 4)

    train_donors = set(train.column("donor_id").to_pylist())
    test_donors = set(test.column("donor_id").to_pylist())
    assert (result.train_donors, result.test_donors) == (len(train_donors), len(test_donors))
    if split_by == "cell":
        assert result.mode == "cell"
        ages = Counter(a for a in source.column("age").to_pylist() if a is not None)
        test_ages = Counter(test.column("age").to_pylist())
        assert {a: test_ages.get(a, 0) for a in ages} == {a: expected_test_count(n, 0.25) for a, n in ages.items()}
    else:
        assert result.mode == "donor"  # auto: 8 donors * 0.25 >= 1
        assert train_donors.isdisjoint(test_donors)
        aged_donors = Counter(r["donor_id"] for r in source.to_pylist() if r["age"] is not None)
        largest = max(aged_donors.values()) / len(aged_ids)
        assert abs(result.test_share - 0.25) <= largest + 1e-12


@pytest.mark.parametrize("split_by", ["cell", "donor"])
def test_split_chunks_byte_identical_reruns(tmp_path: Path, split_by: str) -> None:
    """Two runs with the same seed write byte-identical files; another seed splits differently."""
    make_input(tmp_path)
    _, train_a, test_a = run_split(tmp_path, "a", split_by=split_by)
    _, train_b, test_b = run_split(tmp_path, "b", split_by=split_by)
    for dir_a, dir_b in ((train_a, train_b), (test_a, test_b)):
        assert dir_a is not None and dir_b is not None
        names_a = sorted(p.name for p in dir_a.iterdir())
        assert names_a == sorted(p.name for p in dir_b.iterdir())
        for name in names_a:
            assert (dir_a / name).read_bytes() == (dir_b / name).read_bytes()
    results = {
        tuple(read_folder(run_split(tmp_path, f"s{seed}", split_by=split_by, seed=seed)[2])[0]
              .column("cell_id").to_pylist())
        for seed in range(5)
    }
    assert len(results) > 1


def test_split_chunks_without_test_folder(tmp_path: Path) -> None:
    """test_folder=None: no split, every aged cell in train, in order."""
    source = make_input(tmp_path)
    result, train_dir, test_dir = run_split(tmp_path, "out", with_test=False, chunk_size=6)
    assert test_dir is None
    train, sizes = read_folder(train_dir)
    expected = source.filter(pa.array([a is not None for a in source.column("age").to_pylist()]))
    assert train.equals(expected)
    assert_chunk_sizes(sizes, 6)
    assert result.mode == "none"
    assert (result.train_cells, result.test_cells) == (expected.num_rows, 0)
    assert result.without_age == source.num_rows - expected.num_rows
    assert result.test_files == []
    assert result.train_donors == len(set(expected.column("donor_id").to_pylist()))


def test_split_chunks_without_donor_column(tmp_path: Path) -> None:
    """No donor_id column: auto falls back to cell mode, donor mode is an error."""
    make_input(tmp_path, slices=((0, 40),), donors=False)
    result, _, _ = run_split(tmp_path, "auto", split_by="auto")
    assert result.mode == "cell"
    assert (result.train_donors, result.test_donors) == (0, 0)
    with pytest.raises(ValueError):
        run_split(tmp_path, "donor", split_by="donor")


def test_split_refuses_ages_of_other_chunks(tmp_path: Path) -> None:
    """Ages that do not belong to the chunks (a file missing, or the ages of other cells): a clear
    error, nothing mislabelled."""
    make_input(tmp_path)
    ages_file = tmp_path / "ages" / "chunk_0000.parquet"
    ages = pq.read_table(ages_file)
    ages_file.unlink()
    with pytest.raises(ValueError, match=r"holds 27 ages for 40 cells in .*: materialize aged_chunks again"):
        run_split(tmp_path, "missing", split_by="donor")
    other_cells = pa.array([f"other{i}" for i in range(ages.num_rows)])
    pq.write_table(ages.set_column(0, "cell_id", other_cells), ages_file)
    with pytest.raises(ValueError, match="chunk_0000.parquet does not hold the cells of .*: materialize aged_chunks again"):
        run_split(tmp_path, "other", split_by="donor")


def test_donor_codes_follow_sorted_ids_across_chunks(tmp_path: Path) -> None:
    """Donors held as int32 codes numbered in sorted id order (null as ""), the same across
    chunks, so the seeded donor choice over codes is the one over the ids themselves."""
    ids = ["d-b", None, "d-a", "é-long-donor-identifier" * 4, "d-b", "d-a", "d-c"]
    writer = ChunkWriter(tmp_path / "in", "zstd", 4)
    writer.write(pa.table({"donor_id": pa.array(ids, pa.string())}))
    writer.close()
    codes = _donor_codes(tmp_path / "in")
    assert codes.dtype == np.int32
    assert codes.tolist() == [2, 0, 1, 4, 2, 1, 3]
    as_ids = np.array([i or "" for i in ids])
    for seed in range(5):
        chosen = pick_test_donors(codes, 0.4, seed)
        assert {str(np.unique(as_ids)[c]) for c in chosen} == pick_test_donors(as_ids, 0.4, seed)


# -- the split the project chooses never fails its own checks -------------------------------------


AGE_COLUMNS = ["age", "age_min", "age_max"]


def write_cells(root: Path, columns: dict[str, list]) -> None:
    """One interim chunk of these cells and its age file (``cell_id`` plus the age columns)."""
    n = len(columns["age"])
    table = pa.table({
        "cell_id": pa.array([f"c{i:04d}" for i in range(n)], pa.string()),
        "cell_sentence": pa.array(["A B"] * n, pa.string()),
        **{name: pa.array(values, pa.float64() if name in AGE_COLUMNS else None) for name, values in columns.items()},
    })
    for folder in ("in", "ages"):
        (root / folder).mkdir(parents=True)
    pq.write_table(table.drop_columns(AGE_COLUMNS), root / "in" / "chunk_0000.parquet")
    pq.write_table(table.select(["cell_id", *AGE_COLUMNS]), root / "ages" / "chunk_0000.parquet")


def test_one_donor_auto_split_puts_the_whole_dataset_on_one_side(tmp_path: Path) -> None:
    """The real CellxGene fixture's case: one donor. auto -> donor; every cell in train, no test
    cell, no donor on both sides, nothing to warn about."""
    write_cells(tmp_path, {"donor_id": ["CE0008678"] * 50, "age": [23.0] * 50, "age_min": [23.0] * 50, "age_max": [24.0] * 50})
    result, _, test = run_split(tmp_path, "out", split_by="auto", test_size=0.05)
    assert (result.mode, result.mode_reason) == ("donor", "the file has a donor_id column")
    assert (result.train_cells, result.test_cells, result.train_donors, result.test_donors, result.donors_in_both) == (50, 0, 1, 0, 0)
    assert result.notes == []
    assert test is not None and read_folder(test)[0].num_rows == 0


def test_eighteen_donors_at_five_percent_split_by_donor(tmp_path: Path) -> None:
    """The issue's synthetic case (18 aged donors, --test-size 0.05) put 15 donors on both sides
    under the old auto rule; now whole donors, none on both sides."""
    donors = [f"d{i:02d}" for i in range(18) for _ in range(20)]
    ages = [float(20 + 3 * (i // 20)) for i in range(len(donors))]
    write_cells(tmp_path, {"donor_id": donors, "age": ages, "age_min": ages, "age_max": [a + 1 for a in ages]})
    result, train, test = run_split(tmp_path, "out", split_by="auto", test_size=0.05, seed=42)
    assert result.mode == "donor" and result.donors_in_both == 0
    assert test is not None
    train_ids = set(read_folder(train)[0].column("donor_id").to_pylist())
    test_ids = set(read_folder(test)[0].column("donor_id").to_pylist())
    assert train_ids.isdisjoint(test_ids) and len(train_ids | test_ids) == 18
    assert (result.train_cells, result.test_cells) == (340, 20)  # one donor of 20 cells: 5.6 %, the closest to 5 %


def test_cell_mode_says_donors_may_leak(tmp_path: Path) -> None:
    """--split-by cell on a file with donors: the result counts the donors on both sides and says why."""
    write_cells(tmp_path, {"donor_id": ["a", "b"] * 20, "age": [30.0] * 40, "age_min": [30.0] * 40, "age_max": [31.0] * 40})
    result, _, _ = run_split(tmp_path, "out", split_by="cell", test_size=0.25)
    assert (result.train_cells, result.test_cells) == (30, 10)
    assert result.donors_in_both == 2
    assert result.notes == ["split by cell: cells of one donor may be in both splits (--split-by cell asked)"]


RANGE_CELLS = {
    # 6 point ages (23), 4 cells of a range [15, 20), 8 censored [80, inf), 2 prenatal (no bounds)
    "age": [23.0] * 6 + [None] * 14,
    "age_min": [23.0] * 6 + [15.0] * 4 + [80.0] * 8 + [None] * 2,
    "age_max": [24.0] * 6 + [20.0] * 4 + [None] * 8 + [None] * 2,
}


def test_age_ranges_are_left_out_by_default(tmp_path: Path) -> None:
    write_cells(tmp_path, RANGE_CELLS)
    result, train, test = run_split(tmp_path, "out", split_by="cell", test_size=0.25)
    assert (result.train_cells, result.test_cells, result.without_age, result.kept_by_bounds) == (4, 2, 14, 0)


def test_include_age_ranges_keeps_bounded_cells_and_stratifies_by_bounds(tmp_path: Path) -> None:
    """With include_age_ranges the 12 cells with bounds only are kept; cell mode draws
    floor(n * 0.25 + 0.5) test cells per (age_min, age_max): 2 of 6, 1 of 4, 2 of 8."""
    write_cells(tmp_path, RANGE_CELLS)
    result, _, test = run_split(tmp_path, "out", split_by="cell", test_size=0.25, include_age_ranges=True)
    assert (result.train_cells, result.test_cells, result.kept_by_bounds) == (13, 5, 12)
    assert test is not None
    test_rows = read_folder(test)[0]
    strata = Counter(zip(test_rows.column("age_min").to_pylist(), test_rows.column("age_max").to_pylist()))
    assert strata == {(23.0, 24.0): 2, (15.0, 20.0): 1, (80.0, None): 2}


def test_primary_only_drops_non_primary_cells_before_the_split(tmp_path: Path) -> None:
    flags = [True] * 10 + [False] * 6 + [None] * 4
    columns = {"is_primary_data": flags, "age": [40.0] * 20, "age_min": [40.0] * 20, "age_max": [41.0] * 20}
    write_cells(tmp_path, columns)
    kept_all, _, _ = run_split(tmp_path, "all", split_by="cell", test_size=0.25)
    assert (kept_all.train_cells + kept_all.test_cells, kept_all.primary_cells, kept_all.non_primary_cells, kept_all.non_primary_dropped) == (20, 10, 6, 0)
    primary, train, test = run_split(tmp_path, "primary", split_by="cell", test_size=0.25, primary_only=True)
    assert (primary.train_cells, primary.test_cells, primary.non_primary_dropped) == (10, 4, 6)
    assert test is not None
    published = pa.concat_tables([read_folder(train)[0], read_folder(test)[0]])
    assert False not in published.column("is_primary_data").to_pylist()


def test_nothing_to_train_on_is_said(tmp_path: Path) -> None:
    write_cells(tmp_path, {"donor_id": ["a"] * 5, "age": [None] * 5, "age_min": [None] * 5, "age_max": [None] * 5})
    result, _, _ = run_split(tmp_path, "out", split_by="auto")
    assert (result.train_cells, result.test_cells, result.without_age) == (0, 0, 5)
    assert result.notes == ["no cell has an age: nothing to train on"]


# -- progress callbacks (split_chunks, add_ages) -----------------------------------------------------


def folder_bytes(folder: Path | None) -> dict[str, bytes]:
    assert folder is not None
    return {p.name: p.read_bytes() for p in sorted(folder.glob("chunk_*.parquet"))}


@pytest.mark.parametrize("slices", [((0, 10), (10, 20), (20, 30), (30, 40)), ((0, 13), (13, 13), (13, 40))], ids=["4x10", "13-0-27"])
def test_split_progress_per_input_chunk_and_same_bytes(tmp_path: Path, slices: tuple[tuple[int, int], ...]) -> None:
    """One call per input chunk in input cells (kept or not), an empty chunk adding none; the
    last, (40, 40), once every output file is on disk; outputs byte-identical without it."""
    make_input(tmp_path, slices)
    calls: list[tuple[int, int]] = []
    seen: list[dict[str, bytes]] = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total))
        seen.append(folder_bytes(tmp_path / "with" / "train"))

    _, train, test = run_split(tmp_path, "with", progress=progress)
    _, train_0, test_0 = run_split(tmp_path, "without")
    ends = sorted({stop for _, stop in slices})
    assert calls == [(end, 40) for end in ends]
    assert seen[-1] == folder_bytes(train) == folder_bytes(train_0)
    assert folder_bytes(test) == folder_bytes(test_0)


def test_split_progress_of_zero_cells(tmp_path: Path) -> None:
    make_input(tmp_path, ((0, 0),))
    calls: list[tuple[int, int]] = []
    run_split(tmp_path, "out", progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 0)]


def test_add_ages_progress_per_chunk_and_same_bytes(tmp_path: Path) -> None:
    """add_ages: one call per non-empty chunk written (13, 0 and 27 cells: two calls)."""
    from scrna_assets.core.add_age import add_ages

    make_input(tmp_path)
    calls: list[tuple[int, int]] = []
    add_ages(tmp_path / "in", tmp_path / "with", "zstd", progress=lambda d, t: calls.append((d, t)))
    add_ages(tmp_path / "in", tmp_path / "without", "zstd")
    assert calls == [(13, 40), (40, 40)]
    assert folder_bytes(tmp_path / "with") == folder_bytes(tmp_path / "without")

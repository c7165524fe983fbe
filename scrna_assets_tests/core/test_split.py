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


def test_choose_mode_auto() -> None:
    """auto -> donor iff a donor column exists and n_donors * test_size >= 1."""
    ten = np.array([f"d{i}" for i in range(10) for _ in range(3)])
    assert choose_mode("auto", ten, 0.1) == "donor"  # 10 * 0.1 == 1
    assert choose_mode("auto", ten, 0.09) == "cell"  # 0.9 < 1
    assert choose_mode("auto", ten[:27], 0.1) == "cell"  # 9 donors
    assert choose_mode("auto", np.array(["a", "b"]), 0.5) == "donor"
    assert choose_mode("auto", np.array(["a", "a", "a"]), 0.5) == "cell"  # one donor, 0.5 < 1
    assert choose_mode("auto", np.array([], dtype=str), 0.5) == "cell"
    assert choose_mode("auto", None, 0.5) == "cell"


def test_choose_mode_explicit() -> None:
    """Explicit modes are honoured; donor without donors and unknown modes are errors."""
    donors = np.array(["a", "b"])
    assert choose_mode("cell", donors, 0.5) == "cell"
    assert choose_mode("donor", donors, 0.01) == "donor"
    assert choose_mode("cell", None, 0.5) == "cell"
    with pytest.raises(ValueError, match="donor_id"):
        choose_mode("donor", None, 0.5)
    with pytest.raises(ValueError, match="--split-by"):
        choose_mode("random", donors, 0.5)


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
    ``root/ages``, with nulls in age; returns the whole input table with ``age`` last."""
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
    (root / "in").mkdir(parents=True)
    (root / "ages").mkdir(parents=True)
    for index, (start, stop) in enumerate(slices):
        part = table.slice(start, stop - start)
        pq.write_table(part.drop_columns(["age"]), root / "in" / f"chunk_{index:04d}.parquet")
        pq.write_table(part.select(["cell_id", "age"]), root / "ages" / f"chunk_{index:04d}.parquet")
    return table


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

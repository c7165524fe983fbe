"""Folder layout and atomic publication: no half datasets, no stale chunks, no collateral damage."""

from pathlib import Path

import pytest

from scrna_assets.layout import DatasetLayout


@pytest.fixture
def layout(tmp_path: Path) -> DatasetLayout:
    return DatasetLayout(tmp_path / "interim", tmp_path / "output", tmp_path / "logs")


def test_folders_change_only_under_the_dataset_lock(layout: DatasetLayout) -> None:
    with layout.staging("parquet_chunks", "d") as staging:
        pass
    for change in (lambda: layout.publish(staging, "parquet_chunks", "d"), lambda: layout.remove_dataset("d"),
                   lambda: layout.clear_stale_staging("parquet_chunks", "d")):
        with pytest.raises(RuntimeError, match="only changed by the run that holds the dataset's lock"):
            change()
    assert staging.exists() and not layout.asset_dir("parquet_chunks", "d").exists()


def test_paths_follow_the_seed_layout(layout: DatasetLayout, tmp_path: Path) -> None:
    assert layout.asset_dir("parquet_chunks", "d") == tmp_path / "interim/parquet_chunks/d"
    assert layout.asset_dir("aged_chunks", "d") == tmp_path / "interim/aged_chunks/d"
    assert layout.asset_dir("train_test_splits", "d") == tmp_path / "output/d"
    assert layout.dataset_log_dir("d") == tmp_path / "logs/d"
    assert layout.hgnc_mapping_file() == tmp_path / "interim/hgnc_mapper/hgnc_mapping.parquet"


def test_staging_is_removed_when_the_body_fails(layout: DatasetLayout) -> None:
    with pytest.raises(RuntimeError):
        with layout.staging("parquet_chunks", "d") as staging:
            (staging / "chunks").mkdir()
            raise RuntimeError("boom")
    assert list((layout.interim_dir / "parquet_chunks").iterdir()) == []


def test_publish_replaces_the_whole_folder(layout: DatasetLayout) -> None:
    final = layout.asset_dir("parquet_chunks", "d")
    (final / "chunks").mkdir(parents=True)
    for i in range(3):
        (final / "chunks" / f"chunk_{i:04d}.parquet").write_text("old")
    with layout.staging("parquet_chunks", "d") as staging:
        (staging / "chunks").mkdir()
        (staging / "chunks" / "chunk_0000.parquet").write_text("new")
    with layout.lock("d"):
        layout.publish(staging, "parquet_chunks", "d")
    assert [p.name for p in (final / "chunks").iterdir()] == ["chunk_0000.parquet"]
    assert (final / "chunks" / "chunk_0000.parquet").read_text() == "new"
    assert sorted(p.name for p in final.parent.iterdir()) == ["d"]


def test_stale_staging_cleanup_touches_only_its_own_dataset(layout: DatasetLayout) -> None:
    """'a' must not remove the staging of 'a-b' although 'a-b' starts with 'a'."""
    parent = layout.interim_dir / "parquet_chunks"
    with layout.staging("parquet_chunks", "a"):
        pass
    with layout.staging("parquet_chunks", "a-b"):
        pass
    with layout.lock("a"):
        removed = layout.clear_stale_staging("parquet_chunks", "a")
    assert len(removed) == 1
    assert [p.name.startswith(".staging-a-b+") for p in parent.iterdir()] == [True]


def test_remove_dataset_removes_only_that_dataset(layout: DatasetLayout) -> None:
    for dataset in ("a", "b"):
        for asset in ("parquet_chunks", "aged_chunks", "train_test_splits"):
            (layout.asset_dir(asset, dataset) / "chunks").mkdir(parents=True)
    with layout.lock("a"):
        removed = layout.remove_dataset("a", ("parquet_chunks", "aged_chunks"))
    assert removed == [layout.asset_dir("parquet_chunks", "a"), layout.asset_dir("aged_chunks", "a")]
    assert layout.asset_dir("train_test_splits", "a").exists()
    assert all(layout.asset_dir(asset, "b").exists() for asset in ("parquet_chunks", "aged_chunks", "train_test_splits"))

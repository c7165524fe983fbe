"""Crashes, reruns, concurrent runs, write errors, inputs that change, corrupt caches, and names
that try to leave the roots: the tool keeps working and never publishes half a dataset."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import scrna_assets.assets as assets_module
import scrna_assets.core.parquet_io as parquet_io
from scrna_assets.core.synthetic import write_synthetic_h5ad
from scrna_assets.layout import DatasetLayout
from scrna_assets.runner import PipelineRunner

BIN = Path(sys.executable).parent


def parquet_digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.parquet"))}


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith((".staging-", ".retired-"))]


@pytest.fixture(scope="module")
def mid_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_h5ad(tmp_path_factory.mktemp("mid") / "mid.h5ad", 20_000, 3_000, 300, seed=2)


def preprocess(root: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRNA_", "DAGSTER_HOME", "HF_"))}
    return subprocess.Popen(
        [str(BIN / "preprocess"), *args], cwd=root, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def test_sigkill_during_conversion_then_rerun_gives_identical_outputs(mid_file: Path, tmp_path: Path) -> None:
    args = ["run-all", str(mid_file), "--offline", "--chunk-size", "1000"]
    reference = tmp_path / "reference"
    reference.mkdir()
    assert preprocess(reference, *args).wait(timeout=600) == 0

    crashed = tmp_path / "crashed"
    crashed.mkdir()
    process = preprocess(crashed, *args)
    staging_root = crashed / "data/interim/parquet_chunks"
    deadline = time.monotonic() + 300
    while not list(staging_root.glob(".staging-mid+*/chunks/chunk_0003.parquet")):
        assert process.poll() is None and time.monotonic() < deadline, "conversion ended before it could be killed"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert leftovers(crashed) and not (crashed / "data/output/mid").exists()  # killed mid-way: nothing published

    rerun = preprocess(crashed, *args)
    output = rerun.communicate(timeout=600)[0].decode()
    assert rerun.returncode == 0, output[-3000:]
    assert parquet_digests(crashed / "data/output/mid") == parquet_digests(reference / "data/output/mid")
    assert len(parquet_digests(crashed / "data/output/mid")) == 21  # 20 train chunks of <= 1000 cells, 1 test
    assert leftovers(crashed) == []


def test_a_second_run_of_the_same_dataset_fails_clearly_while_the_first_holds_it(example_files, make_settings, instance) -> None:
    h5ad, hgnc = example_files
    settings = make_settings(hgnc_file=str(hgnc))
    runner = PipelineRunner(settings, instance)
    assert runner.run_step(1).success
    runner.register("example_cellxgene")
    with runner.layout.dataset_lock("example_cellxgene"):
        blocked = runner.run_step(2, "example_cellxgene", h5ad)
    assert not blocked.success
    assert blocked.message.startswith("dataset 'example_cellxgene' is being processed by another run")
    assert not (Path(settings.interim_dir) / "parquet_chunks" / "example_cellxgene").exists()
    assert runner.run_step(2, "example_cellxgene", h5ad).success  # free again


def test_a_write_error_fails_the_dataset_and_removes_partial_files(example_files, make_settings, instance, monkeypatch) -> None:
    h5ad, hgnc = example_files
    settings = make_settings(hgnc_file=str(hgnc), chunk_size=500)
    real_write = parquet_io.pq.write_table
    calls = []

    def disk_fills_up(table, path, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(table, path, **kwargs)

    monkeypatch.setattr(parquet_io.pq, "write_table", disk_fills_up)
    runner = PipelineRunner(settings, instance)
    assert runner.run_step(1).success
    runner.register("example_cellxgene")
    result = runner.run_step(2, "example_cellxgene", h5ad)
    assert not result.success
    assert result.message.startswith("example_cellxgene: parquet_chunks: [Errno 28] No space left on device")
    assert "chunk_0002.parquet" in result.message
    assert leftovers(Path(settings.interim_dir)) == []
    assert not (Path(settings.interim_dir) / "parquet_chunks" / "example_cellxgene").exists()


@pytest.mark.parametrize("change", ["touched", "deleted"])
def test_an_input_that_changes_while_read_is_not_published(example_files, make_settings, instance, monkeypatch, tmp_path, change) -> None:
    h5ad, hgnc = example_files
    source = tmp_path / "moving.h5ad"
    shutil.copy(h5ad, source)
    real_convert = assets_module.convert_h5ad

    def convert_while_someone_writes(path, *args, **kwargs):
        result = real_convert(path, *args, **kwargs)
        if change == "touched":
            os.utime(path, (time.time() + 5, time.time() + 5))
        else:
            path.unlink()
        return result

    monkeypatch.setattr(assets_module, "convert_h5ad", convert_while_someone_writes)
    settings = make_settings(hgnc_file=str(hgnc))
    runner = PipelineRunner(settings, instance)
    assert runner.run_step(1).success
    runner.register("moving")
    result = runner.run_step(2, "moving", source)
    expected = "changed while being read (size or mtime differ)" if change == "touched" else "disappeared while being read"
    assert result.message == f"{source}: {expected}; nothing was published"
    assert not (Path(settings.interim_dir) / "parquet_chunks" / "moving").exists()
    assert leftovers(Path(settings.interim_dir)) == []


def test_a_corrupt_hgnc_cache_is_detected_and_dropped(make_settings, instance) -> None:
    settings = make_settings()  # offline, no --hgnc-file: only the cache could help
    layout = DatasetLayout.from_roots(settings.interim_dir, settings.output_dir, settings.log_dir)
    layout.hgnc_download_cache().parent.mkdir(parents=True)
    layout.hgnc_download_cache().write_text("<html>proxy error</html>\n")
    result = PipelineRunner(settings, instance).run_step(1)
    assert result.success
    assert result.figures["rows"] == 0 and result.figures["source"] == "none"
    assert "No HGNC table (offline mode)" in result.figures["warning"]
    assert not layout.hgnc_download_cache().exists()


@pytest.mark.parametrize("name", ["../escape", "a/b", "/abs", "..", ""])
def test_no_partition_key_can_point_outside_the_roots(make_settings, instance, tmp_path, name: str) -> None:
    settings = make_settings()
    layout = DatasetLayout.from_roots(settings.interim_dir, settings.output_dir, settings.log_dir)
    with pytest.raises(ValueError, match="is not a dataset name"):
        layout.asset_dir("parquet_chunks", name)
    with pytest.raises(ValueError, match="is not a dataset name"):
        layout.dataset_log_dir(name)
    before = sorted(p for p in tmp_path.rglob("*"))
    if name:
        instance.add_dynamic_partitions("datasets", [name])
        result = PipelineRunner(settings, instance).run_step(3, name)
        assert not result.success and "is not a dataset name" in result.message
    assert [p for p in tmp_path.rglob("*") if p not in before and "dagster_home" not in str(p)] == []

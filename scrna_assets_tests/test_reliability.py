"""Crashes, reruns, concurrent runs, write errors, inputs that change, corrupt caches, and names
that try to leave the roots: the tool keeps working and never publishes half a dataset."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import socket
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
HOLD_LOCK = """
import sys
from pathlib import Path
from scrna_assets.dataset_lock import DatasetLock
with DatasetLock(Path(sys.argv[1]), "example_cellxgene", "run-elsewhere"):
    print("held", flush=True)
    sys.stdin.read()
"""


def parquet_digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.parquet"))}


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith((".staging-", ".retired-"))]


@pytest.fixture(scope="module")
def mid_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_h5ad(tmp_path_factory.mktemp("mid") / "mid.h5ad", 20_000, 3_000, 300, seed=2)


def preprocess(root: Path, *args: str, dagster_home: Path | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRNA_", "DAGSTER_HOME", "HF_"))}
    if dagster_home is not None:
        dagster_home.mkdir(exist_ok=True)
        env["DAGSTER_HOME"] = str(dagster_home)
    return subprocess.Popen(
        [str(BIN / "preprocess"), *args], cwd=root, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def test_sigkill_during_conversion_then_rerun_gives_identical_outputs(mid_file: Path, tmp_path: Path, monkeypatch) -> None:
    """kill -9 of the whole CLI: the run stays STARTED until the next CLI start marks it failed."""
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
    killed_pid = json.loads((crashed / "data/interim/.locks/mid.lock").read_text())["pid"]
    assert dagster_runs(crashed, monkeypatch)["mid"] == ("STARTED", "")  # no process left to say otherwise

    rerun = preprocess(crashed, *args)
    output = rerun.communicate(timeout=600)[0].decode()
    assert rerun.returncode == 0, output[-3000:]
    assert parquet_digests(crashed / "data/output/mid") == parquet_digests(reference / "data/output/mid")
    assert len(parquet_digests(crashed / "data/output/mid")) == 21  # 20 train chunks of <= 1000 cells, 1 test
    assert leftovers(crashed) == []
    assert "Marked run " in output and "failed: its process is gone" in output
    from dagster import DagsterEventType, DagsterInstance, RunsFilter

    with DagsterInstance.get() as instance:  # DAGSTER_HOME set by dagster_runs
        (killed,) = instance.get_runs(RunsFilter(tags={"scrna_assets/pid": str(killed_pid)}))
        (record,) = instance.get_records_for_run(killed.run_id, of_type=DagsterEventType.RUN_FAILURE).records
        failure = record.event_log_entry.dagster_event
    assert killed.status.value == "FAILURE"
    assert failure.message == (
        f"the process running it (pid {killed_pid} on {socket.gethostname()}) is gone (killed or crashed); marked failed by scrna_assets"
    )


def test_a_run_refused_by_the_lock_names_the_holder_and_changes_nothing(example_files, make_settings, instance, tmp_path) -> None:
    h5ad, hgnc = example_files
    settings = make_settings(hgnc_file=str(hgnc), keep_interim=True)
    runner = PipelineRunner(settings, instance)
    assert runner.run_step(1).success
    runner.register("example_cellxgene")
    assert runner.run_step(2, "example_cellxgene", h5ad).success
    published = Path(settings.interim_dir) / "parquet_chunks" / "example_cellxgene"
    before = parquet_digests(published)
    lock = DatasetLayout.from_roots(settings.interim_dir, settings.output_dir, settings.log_dir).lock_file("example_cellxgene")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline() == "held\n"
    blocked = runner.run_step(2, "example_cellxgene", h5ad)
    holder.communicate("")
    assert not blocked.success
    assert blocked.message.startswith(f"dataset 'example_cellxgene' is busy: run run-elsewhere (pid {holder.pid} on ")
    assert blocked.message.endswith("this run wrote and deleted nothing; try again when that run has finished")
    assert parquet_digests(published) == before and leftovers(Path(settings.interim_dir)) == []
    assert runner.run_step(2, "example_cellxgene", h5ad).success  # free again


def test_a_write_error_fails_the_dataset_and_removes_partial_files(example_files, make_settings, instance, monkeypatch) -> None:
    h5ad, hgnc = example_files
    settings = make_settings(hgnc_file=str(hgnc), chunk_size=500)
    real_write = parquet_io.write_chunk_file
    calls = []

    def disk_fills_up(table, path, compression):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(table, path, compression)

    monkeypatch.setattr(parquet_io, "write_chunk_file", disk_fills_up)
    runner = PipelineRunner(settings, instance)
    assert runner.run_step(1).success
    runner.register("example_cellxgene")
    result = runner.run_step(2, "example_cellxgene", h5ad)
    assert not result.success
    staging = Path(calls[-1]).parent
    assert staging.parent.name.startswith(".staging-example_cellxgene+")
    assert result.message == f"example_cellxgene: parquet_chunks: no space left in {staging} (the disk or quota is full)"
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


def dagster_runs(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[str, str]]:
    """Partition -> (status, failure message) of the dataset runs in the CLI's instance under root."""
    from dagster import DagsterEventType, DagsterInstance

    monkeypatch.setenv("DAGSTER_HOME", str(root / ".dagster"))
    with DagsterInstance.get() as instance:
        found = {}
        for run in instance.get_runs():
            if "dagster/partition" in run.tags:
                failures = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.RUN_FAILURE).records
                message = failures[0].event_log_entry.dagster_event.message if failures else ""
                found[run.tags["dagster/partition"]] = (run.status.value, message)
        return found


def wait_for(process: subprocess.Popen, condition, what: str) -> None:
    deadline = time.monotonic() + 300
    while not condition():
        assert process.poll() is None and time.monotonic() < deadline, f"the run ended before {what}"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def lone_run(mid_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("lone")
    assert preprocess(root, "run-all", str(mid_file), "--offline", "--chunk-size", "1000").wait(timeout=600) == 0
    return parquet_digests(root / "data/output/mid")


OVERLAP_POINTS = {
    "converting": lambda root: list((root / "data/interim/parquet_chunks").glob(".staging-mid+*/chunks/chunk_0003.parquet")),
    "converted": lambda root: (root / "data/interim/parquet_chunks/mid/provenance.json").exists(),
    "splitting": lambda root: list((root / "data/output").glob(".staging-mid+*/train")),
    "published": lambda root: (root / "data/output/mid/provenance.json").exists(),
}


@pytest.mark.parametrize("point", list(OVERLAP_POINTS))
def test_a_second_run_started_while_the_first_works_never_destroys_its_work(mid_file: Path, lone_run, tmp_path: Path, point: str) -> None:
    """Run A is frozen (SIGSTOP) at a point of its pipeline while run B of the same file runs from
    start to end; then A goes on. A succeeds with the output of a lone run; B either says the
    dataset is busy and names A's run, or (A being past its lock) succeeds too. B has its own
    Dagster instance: a process frozen inside a SQLite transaction would lock a shared one, which
    is an artefact of SIGSTOP, not of the run boundary under test (the data folders are shared)."""
    args = ["run-all", str(mid_file), "--offline", "--chunk-size", "1000"]
    first = preprocess(tmp_path, *args)
    wait_for(first, lambda: OVERLAP_POINTS[point](tmp_path), point)
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        second = preprocess(tmp_path, *args, dagster_home=tmp_path / "second_instance")
        second_output = second.communicate(timeout=600)[0].decode()
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    first_output = first.communicate(timeout=600)[0].decode()
    assert first.returncode == 0, first_output[-3000:]
    assert parquet_digests(tmp_path / "data/output/mid") == lone_run
    if second.returncode == 0:
        assert point == "published", second_output[-3000:]  # only once A may have ended
    else:
        assert second.returncode == 1
        busy = re.search(r"✗ mid: step 2 \(parquet_chunks\): dataset 'mid' is busy: run ([0-9a-f-]{36}) \(pid \d+ on ", second_output)
        assert busy, second_output[-3000:]
    assert leftovers(tmp_path) == [] and not (tmp_path / "data/interim/parquet_chunks/mid").exists()


def test_a_dataset_process_killed_while_it_converts_fails_that_dataset_only(mid_file: Path, tmp_path: Path, monkeypatch) -> None:
    """SIGKILL from outside to the process converting the second of three files: that dataset is
    FAILED with "crashed (signal 9)", its Dagster run is marked failed at once, its partial files
    are removed, the other two succeed, and the summary is written."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    for name in ("a", "b", "c"):
        os.symlink(mid_file, folder / f"{name}.h5ad")
    batch = preprocess(tmp_path, "run-all", str(folder), "--batch-mode", "--offline", "--chunk-size", "1000")
    staging = tmp_path / "data/interim/parquet_chunks"
    wait_for(batch, lambda: list(staging.glob(".staging-b+*/chunks/chunk_0003.parquet")), "b's conversion")
    holder = json.loads((tmp_path / "data/interim/.locks/b.lock").read_text())
    assert holder["pid"] != batch.pid
    os.kill(holder["pid"], signal.SIGKILL)
    output = batch.communicate(timeout=600)[0].decode()
    assert batch.returncode == 1, output[-3000:]
    rows = json.loads((tmp_path / "logs/batch_summary.json").read_text())
    assert [(r["dataset"], r["status"], r["message"]) for r in rows] == [
        ("a", "SUCCESS", ""), ("b", "FAILED", "step 2 (parquet_chunks): crashed (signal 9)"), ("c", "SUCCESS", ""),
    ]
    assert "✗ Step 2 failed: crashed (signal 9)" in output and "Traceback" not in output
    runs = dagster_runs(tmp_path, monkeypatch)
    assert runs["b"] == ("FAILURE", "the dataset process crashed (signal 9)")
    assert runs["a"][0] == runs["c"][0] == "SUCCESS"
    assert leftovers(tmp_path) == [] and not (staging / "b").exists() and not (tmp_path / "data/output/b").exists()

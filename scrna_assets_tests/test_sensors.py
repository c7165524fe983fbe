"""The file-drop sensor, tick by tick, with real files and a real instance."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from dagster import SensorResult, build_sensor_context

from scrna_assets.runner import PipelineRunner
from scrna_assets.sensors import h5ad_file_sensor


@pytest.fixture
def watched(tmp_path: Path, make_settings, example_files, monkeypatch: pytest.MonkeyPatch):
    settings = make_settings(hgnc_file=str(example_files[1]), sensor_settle_seconds=5.0)
    Path(settings.input_dir).mkdir(parents=True)
    return settings


def tick(instance, settings, cursor: str | None) -> SensorResult:
    context = build_sensor_context(instance=instance, cursor=cursor, resources={"settings": settings})
    return h5ad_file_sensor(context)


def drop(settings, source: Path, name: str, age_seconds: float = 60.0) -> Path:
    target = Path(settings.input_dir) / name
    shutil.copy(source, target)
    old = time.time() - age_seconds
    os.utime(target, (old, old))
    return target


def test_new_unchanged_and_changed_files(watched, instance, example_files) -> None:
    settings = watched
    path = drop(settings, example_files[0], "my data.h5ad")
    first = tick(instance, settings, None)
    assert first.run_requests == []
    assert "waiting for my data.h5ad to settle" in first.skip_reason.skip_message
    # stable now, but hgnc_mapper was never materialized: it is asked for first, the file waits
    second = tick(instance, settings, first.cursor)
    assert [(r.job_name, r.run_key) for r in second.run_requests] == [("hgnc_job", "hgnc_mapper:first")]
    assert PipelineRunner(settings, instance).run_step(1).success
    third = tick(instance, settings, second.cursor)
    stat = path.stat()
    assert [(r.job_name, r.partition_key, r.run_key) for r in third.run_requests] == [
        ("dataset_job", "my_data", f"my_data:{stat.st_size}:{stat.st_mtime_ns}")
    ]
    assert third.dynamic_partitions_requests[0].partition_keys == ["my_data"]
    cursor = json.loads(third.cursor)  # the cursor round-trips as JSON
    assert cursor == {"seen": {"my data.h5ad": f"{stat.st_size}:{stat.st_mtime_ns}"}, "sent": {"my_data": f"{stat.st_size}:{stat.st_mtime_ns}"}}
    unchanged = tick(instance, settings, third.cursor)
    assert unchanged.run_requests == [] and unchanged.skip_reason.skip_message == "no new or changed h5ad files"
    os.utime(path, (time.time() - 30, time.time() - 30))  # the file changed (new mtime)
    changed_once = tick(instance, settings, unchanged.cursor)
    assert changed_once.run_requests == []
    changed_twice = tick(instance, settings, changed_once.cursor)
    new = path.stat()
    assert [r.run_key for r in changed_twice.run_requests] == [f"my_data:{new.st_size}:{new.st_mtime_ns}"]


def test_a_file_being_written_waits(watched, instance, example_files) -> None:
    settings = watched
    assert PipelineRunner(settings, instance).run_step(1).success
    drop(settings, example_files[0], "fresh.h5ad", age_seconds=0.0)
    first = tick(instance, settings, None)
    second = tick(instance, settings, first.cursor)  # same size and mtime, but younger than 5 s
    assert second.run_requests == []
    assert "waiting for fresh.h5ad to settle (still changing or younger than 5 s)" in second.skip_reason.skip_message


def test_collisions_and_bad_names_are_not_registered(watched, instance, example_files) -> None:
    settings = watched
    assert PipelineRunner(settings, instance).run_step(1).success
    for name in ("a b.h5ad", "a_b.h5ad", "@@.h5ad"):
        drop(settings, example_files[0], name)
    first = tick(instance, settings, None)
    second = tick(instance, settings, first.cursor)
    assert second.run_requests == [] and second.dynamic_partitions_requests == []
    message = second.skip_reason.skip_message
    assert "not registered: " in message and "dataset name 'a_b' is shared by a b.h5ad, a_b.h5ad" in message
    assert "the name '@@' has no usable characters" in message


class QuietReporter:
    """What the CLI's reporter receives, kept so a failed run can be explained."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def file(self, index: int, total: int, dataset: str) -> None: ...

    def step(self, step: int, result) -> None:
        if result is not None:
            self.lines.append(f"{'ok' if result.success else 'failed'} {step}: {result.message}")

    def note(self, line: str) -> None:
        self.lines.append(line)


def settled_tick(instance, settings, cursor: str | None) -> SensorResult:
    """Two ticks: the first sees the current version of every file, the second may act on it."""
    first = tick(instance, settings, cursor)
    assert first.run_requests == []
    return tick(instance, settings, first.cursor)


def test_output_made_by_the_cli_is_up_to_date_for_the_sensor(watched, instance, example_files, make_settings) -> None:
    """README flow: `preprocess run-all` (here in-process) made the output; the sensor does not run
    it again, but does for a changed file, changed parameters, or a failed blocking check."""
    from scrna_assets.checks import BLOCKING_CHECKS
    from scrna_assets.layout import OUTPUT_ASSET, DatasetLayout
    from scrna_assets.provenance import CHECKS_FILE, record_checks
    from scrna_assets_tests.inprocess import run_dataset_here

    settings = watched
    path = drop(settings, example_files[0], "example_cellxgene.h5ad")
    assert PipelineRunner(settings, instance).run_step(1).success
    reporter = QuietReporter()
    _, outcome = run_dataset_here(settings, instance, "example_cellxgene", path, reporter)
    assert outcome.status == "SUCCESS", reporter.lines
    output = DatasetLayout.from_roots(settings.interim_dir, settings.output_dir, settings.log_dir).asset_dir(OUTPUT_ASSET, "example_cellxgene")
    checks = json.loads((output / CHECKS_FILE).read_text())
    assert "no_donor_in_both_splits" in BLOCKING_CHECKS
    assert all(checks[name]["passed"] for name in BLOCKING_CHECKS)

    same = settled_tick(instance, settings, None)
    assert same.run_requests == []
    assert "example_cellxgene: outputs are up to date (same input file and parameters)" in same.skip_reason.skip_message

    # changed parameters, same unchanged file: stale
    for changed in (make_settings(hgnc_file=settings.hgnc_file, top_genes=settings.top_genes + 1), make_settings(hgnc_file=settings.hgnc_file, seed=settings.seed + 1)):
        rerun = tick(instance, changed, same.cursor)
        stat = path.stat()
        assert [(r.job_name, r.partition_key, r.run_key) for r in rerun.run_requests] == [
            ("dataset_job", "example_cellxgene", f"example_cellxgene:{stat.st_size}:{stat.st_mtime_ns}")
        ]

    # a failed blocking check recorded on the output: stale
    outcomes = {name: (record["passed"], record["severity"]) for name, record in checks.items()}
    record_checks(output, {**outcomes, "no_donor_in_both_splits": (False, "ERROR")})
    failed = tick(instance, settings, same.cursor)
    assert [(r.partition_key, r.run_key) for r in failed.run_requests] == [("example_cellxgene", f"example_cellxgene:{stat.st_size}:{stat.st_mtime_ns}")]
    record_checks(output, outcomes)
    assert tick(instance, settings, same.cursor).run_requests == []  # passing again: up to date again

    # the file changed (an older mtime, already settled): stale
    os.utime(path, (time.time() - 120, time.time() - 120))
    changed_file = settled_tick(instance, settings, same.cursor)
    new = path.stat()
    assert new.st_mtime_ns != stat.st_mtime_ns
    assert [(r.job_name, r.partition_key, r.run_key) for r in changed_file.run_requests] == [
        ("dataset_job", "example_cellxgene", f"example_cellxgene:{new.st_size}:{new.st_mtime_ns}")
    ]


def test_a_truncated_file_waits_until_it_is_complete(watched, instance, example_files) -> None:
    """A settled file shorter than its HDF5 superblock declares is not run; the complete file is."""
    from scrna_assets.core.hdf5_superblock import declared_end_of_file

    settings = watched
    assert PipelineRunner(settings, instance).run_step(1).success
    full = example_files[0].read_bytes()
    path = Path(settings.input_dir) / "copying.h5ad"
    path.write_bytes(full[: len(full) // 2])
    old = time.time() - 60
    os.utime(path, (old, old))
    declared, size = declared_end_of_file(path), os.path.getsize(path)
    assert declared == len(full) and size == len(full) // 2

    truncated = settled_tick(instance, settings, None)
    assert truncated.run_requests == [] and truncated.dynamic_partitions_requests == []
    assert (
        f"waiting: copying.h5ad is incomplete: its HDF5 superblock declares {declared:,} bytes, the file has {size:,}"
        in truncated.skip_reason.skip_message
    )
    assert json.loads(truncated.cursor)["sent"] == {}

    drop(settings, example_files[0], "copying.h5ad")  # the copy finished: same name, settled
    complete = settled_tick(instance, settings, truncated.cursor)
    stat = path.stat()
    assert [(r.job_name, r.partition_key, r.run_key) for r in complete.run_requests] == [
        ("dataset_job", "copying", f"copying:{stat.st_size}:{stat.st_mtime_ns}")
    ]

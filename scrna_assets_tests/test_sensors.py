"""The file-drop sensor, tick by tick, with real files and a real instance."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from dagster import SensorResult, build_sensor_context

from scrna_assets import sensors
from scrna_assets.runner import PipelineRunner
from scrna_assets.sensors import h5ad_file_sensor


@pytest.fixture
def watched(tmp_path: Path, make_settings, example_files, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sensors, "SETTLE_SECONDS", 5.0)
    settings = make_settings(hgnc_file=str(example_files[1]))
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

"""A sensor that turns every new or changed h5ad file in the input folder into a partition run.

Files still being written (size or mtime changed since the last tick, younger than the settle
time, or shorter than their HDF5 superblock says) wait; bad names and name collisions are reported
in the tick and never registered. A file whose published output is up to date (the same test as
``--skip-existing``: ``provenance.stale_reason``) is not run again, whoever made that output.
Each tick first marks failed the runs of this host whose process is gone.
"""

import json
import time
from pathlib import Path

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from scrna_assets.checks import BLOCKING_CHECKS
from scrna_assets.core.hdf5_superblock import incomplete_reason
from scrna_assets.inputs import datasets_by_name, h5ad_files
from scrna_assets.jobs import dataset_job, hgnc_job
from scrna_assets.layout import DatasetLayout
from scrna_assets.partitions import DATASETS_PARTITIONS_NAME, datasets_partitions
from scrna_assets.provenance import mapping_digest, stale_reason
from scrna_assets.resources import PipelineSettings
from scrna_assets.run_liveness import fail_dead_runs
from scrna_assets.settings import Settings
from scrna_assets.steps import HGNC_MAPPER

HGNC_RUN_KEY = f"{HGNC_MAPPER}:first"


def fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def evaluate_folder(
    folder: Path, cursor: dict[str, dict[str, str]], now: float, settle_seconds: float
) -> tuple[list[tuple[str, Path, str]], list[str], dict[str, dict[str, str]]]:
    """(ready datasets as (name, path, fingerprint), reasons for waiting or refusing, new cursor).

    The cursor remembers each file's fingerprint from the previous tick ("seen") and the
    fingerprint last sent for processing ("sent"), so a file is requested once per version.
    """
    seen: dict[str, str] = {}
    sent = dict(cursor.get("sent", {}))
    ready, reasons = [], []
    names, errors = datasets_by_name(h5ad_files(folder))
    reasons += [f"not registered: {error}" for error in errors]
    for name, path in sorted(names.items()):
        try:
            current = fingerprint(path)
            age = now - path.stat().st_mtime
        except OSError as error:
            reasons.append(f"not registered: {path}: {error.strerror}")
            continue
        seen[path.name] = current
        if sent.get(name) == current:
            continue
        if cursor.get("seen", {}).get(path.name) != current or age < settle_seconds:
            reasons.append(f"waiting for {path.name} to settle (still changing or younger than {settle_seconds:g} s)")
            continue
        incomplete = incomplete_reason(path)
        if incomplete:
            reasons.append(f"waiting: {incomplete}")
            continue
        ready.append((name, path, current))
    return ready, reasons, {"seen": seen, "sent": sent}


def up_to_date_left_out(
    ready: list[tuple[str, Path, str]], settings: PipelineSettings, reasons: list[str]
) -> list[tuple[str, Path, str]]:
    """The ready files whose outputs are stale; each up-to-date one gets a reason instead."""
    layout = DatasetLayout.from_roots(settings.interim_dir, settings.output_dir, settings.log_dir)
    if not ready or not layout.hgnc_mapping_file().exists():
        return ready
    import polars as pl

    digest = mapping_digest(pl.read_parquet(layout.hgnc_mapping_file()))
    stale = []
    for name, path, current in ready:
        if stale_reason(layout, name, path, settings, digest, BLOCKING_CHECKS) is None:
            reasons.append(f"{name}: outputs are up to date (same input file and parameters)")
        else:
            stale.append((name, path, current))
    return stale


@sensor(
    jobs=[dataset_job, hgnc_job],
    minimum_interval_seconds=Settings.load().sensor_interval,  # fixed when the code location loads
    default_status=DefaultSensorStatus.RUNNING,
    description="Registers new or changed *.h5ad files in the input folder as partitions and runs them.",
)
def h5ad_file_sensor(context: SensorEvaluationContext, settings: PipelineSettings) -> SensorResult:
    for run_id in fail_dead_runs(context.instance):
        context.log.warning(f"marked run {run_id} failed: its process is gone")
    folder = Path(settings.input_dir)
    cursor = json.loads(context.cursor) if context.cursor else {}
    ready, reasons, new_cursor = evaluate_folder(folder, cursor, time.time(), settings.sensor_settle_seconds)
    for reason in reasons:
        if reason.startswith("not registered"):
            context.log.warning(reason)
    if ready and context.instance.get_latest_materialization_event(AssetKey(HGNC_MAPPER)) is None:
        # Partition runs load the mapping: build it once first, and hold the files until it exists.
        return SensorResult(
            run_requests=[RunRequest(run_key=HGNC_RUN_KEY, job_name=hgnc_job.name)],
            cursor=json.dumps(new_cursor, sort_keys=True),
        )
    requests = []
    for name, path, current in up_to_date_left_out(ready, settings, reasons):
        requests.append(
            RunRequest(
                run_key=f"{name}:{current}",
                job_name=dataset_job.name,
                partition_key=name,
                tags={"scrna_assets/source": "sensor", "scrna_assets/input_file": str(path)},
            )
        )
        new_cursor["sent"][name] = current
    new_names = [name for name, _, _ in ready if not context.instance.has_dynamic_partition(DATASETS_PARTITIONS_NAME, name)]
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[datasets_partitions.build_add_request(new_names)] if new_names else [],
        cursor=json.dumps(new_cursor, sort_keys=True),
        skip_reason=None if requests else ("; ".join(reasons) or "no new or changed h5ad files"),
    )

"""run_liveness against real processes (kill -9) and a real on-disk SQLite Dagster instance."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from dagster import DagsterEvent, DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

from scrna_assets.run_liveness import (
    HOST_TAG,
    PID_TAG,
    PROCESS_START_TAG,
    fail_dead_runs,
    mark_run_failed,
    process_is_gone,
    process_tags,
)

DEADLINE = 120.0
ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = {"telemetry": {"enabled": False}}

# A child that opens the same instance and runs a job whose op writes a marker, then hangs.
HANGING_JOB = """
import os, sys, time
from pathlib import Path
from dagster import DagsterInstance, job, op
from scrna_assets.run_liveness import process_tags

home, marker = sys.argv[1], Path(sys.argv[2])

@op
def hang() -> None:
    marker.write_text(str(os.getpid()))
    time.sleep(3600)

@job
def liveness_probe() -> None:
    hang()

with DagsterInstance.local_temp(home, overrides={"telemetry": {"enabled": False}}) as instance:
    liveness_probe.execute_in_process(instance=instance, tags=process_tags())
"""

# A child that waits for `go`, then sweeps once and prints the run ids it failed.
SWEEPER = """
import sys, time
from pathlib import Path
from dagster import DagsterInstance
from scrna_assets.run_liveness import fail_dead_runs

home, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
with DagsterInstance.local_temp(home, overrides={"telemetry": {"enabled": False}}) as instance:
    ready.touch()
    deadline = time.monotonic() + 120
    while not go.exists():
        assert time.monotonic() < deadline, "no go"
        time.sleep(0.01)
    print(",".join(fail_dead_runs(instance)))
"""


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def started_run(instance: DagsterInstance, tags: dict[str, str]) -> str:
    """A run put in STARTED the way an executor does it: a stored RUN_START event."""
    run = instance.add_run(DagsterRun(job_name="probe", status=DagsterRunStatus.NOT_STARTED, tags=tags))
    start = DagsterEvent(event_type_value=DagsterEventType.RUN_START.value, job_name="probe")
    instance.report_dagster_event(start, run_id=run.run_id)
    assert status(instance, run.run_id) == DagsterRunStatus.STARTED
    return run.run_id


def status(instance: DagsterInstance, run_id: str) -> DagsterRunStatus:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run.status


def failure_messages(instance: DagsterInstance, run_id: str) -> list[str]:
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_FAILURE).records
    return [record.event_log_entry.get_dagster_event().message for record in records]


def child_env(home: str) -> dict[str, str]:
    return {**os.environ, "DAGSTER_HOME": home, "PYTHONPATH": str(ROOT)}


def test_process_tags_name_this_process() -> None:
    tags = process_tags()
    stat = Path(f"/proc/{os.getpid()}/stat").read_text()
    assert tags == {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(os.getpid()),
        PROCESS_START_TAG: stat[stat.rindex(")") + 2 :].split()[19],
    }
    assert process_is_gone(tags) is False


def test_gone_pid_reuse_zombie_and_other_host() -> None:
    mine = process_tags()
    assert process_is_gone({**mine, PROCESS_START_TAG: "1"}) is True  # pid reused
    assert process_is_gone({**mine, PID_TAG: str(dead_pid())}) is True
    assert process_is_gone({**mine, HOST_TAG: "elsewhere.invalid", PID_TAG: str(dead_pid())}) is False
    assert process_is_gone({PID_TAG: str(dead_pid())}) is False  # no host tag: not ours to judge

    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        tags = process_tags(child.pid)
        assert process_is_gone(tags) is False
        assert child.stdin is not None
        child.stdin.close()  # the child exits; unreaped, it is a zombie
        wait_for(lambda: Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", "zombie")
        assert process_is_gone(tags) is True
    finally:
        child.wait()
    assert process_is_gone(tags) is True


def test_kill_9_run_is_failed_once(instance: DagsterInstance, tmp_path: Path) -> None:
    marker = tmp_path / "op_started"
    stderr = tmp_path / "child.stderr"
    with stderr.open("w") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", HANGING_JOB, instance.root_directory, str(marker)],
            env=child_env(instance.root_directory),
            cwd=ROOT,
            stderr=err,
            start_new_session=True,
        )
    try:
        wait_for(lambda: marker.exists() or child.poll() is not None, "the op to start")
        assert marker.exists(), stderr.read_text()
        assert marker.read_text() == str(child.pid)  # the op ran in the child itself
        os.killpg(os.getpgid(child.pid), signal.SIGKILL)
        assert child.wait(timeout=DEADLINE) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()

    runs = instance.get_runs(RunsFilter(tags={PID_TAG: str(child.pid)}))
    assert len(runs) == 1
    run = runs[0]
    assert run.status == DagsterRunStatus.STARTED
    assert run.tags[HOST_TAG] == socket.gethostname()

    assert fail_dead_runs(instance) == [run.run_id]
    after = instance.get_run_by_id(run.run_id)
    assert after is not None and after.status == DagsterRunStatus.FAILURE
    assert after.tags["dagster/failure_reason"] == "UNEXPECTED_TERMINATION"
    assert failure_messages(instance, run.run_id) == [
        f"the process running it (pid {child.pid} on {socket.gethostname()}) is gone (killed or crashed);"
        " marked failed by scrna_assets"
    ]
    assert fail_dead_runs(instance) == []
    assert len(failure_messages(instance, run.run_id)) == 1


def test_only_this_hosts_dead_runs_are_failed(instance: DagsterInstance) -> None:
    gone = dead_pid()
    other_host = started_run(instance, {**process_tags(), HOST_TAG: "elsewhere.invalid", PID_TAG: str(gone)})
    live = started_run(instance, process_tags())
    reused = started_run(instance, {**process_tags(), PROCESS_START_TAG: "1"})
    untagged = started_run(instance, {})
    finished = started_run(instance, {**process_tags(), PID_TAG: str(gone)})
    instance.report_run_failed(instance.get_run_by_id(finished), message="failed by its executor")

    assert fail_dead_runs(instance) == [reused]
    assert status(instance, reused) == DagsterRunStatus.FAILURE
    assert failure_messages(instance, reused) == [
        f"the process running it (pid {os.getpid()} on {socket.gethostname()}) is gone (killed or crashed);"
        " marked failed by scrna_assets"
    ]
    for run_id in (other_host, live, untagged):
        assert status(instance, run_id) == DagsterRunStatus.STARTED
        assert failure_messages(instance, run_id) == []
    assert failure_messages(instance, finished) == ["failed by its executor"]


@pytest.mark.parametrize("initial", [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.CANCELING])
def test_other_unfinished_statuses_are_swept(instance: DagsterInstance, initial: DagsterRunStatus) -> None:
    run = instance.add_run(
        DagsterRun(job_name="probe", status=initial, tags={**process_tags(), PID_TAG: str(dead_pid())})
    )
    assert fail_dead_runs(instance) == [run.run_id]
    assert status(instance, run.run_id) == DagsterRunStatus.FAILURE


def test_concurrent_sweeps_fail_each_run_once(instance: DagsterInstance, tmp_path: Path) -> None:
    dead = [started_run(instance, {**process_tags(), PID_TAG: str(dead_pid())}) for _ in range(5)]
    go = tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(4)]
    sweepers = [
        subprocess.Popen(
            [sys.executable, "-c", SWEEPER, instance.root_directory, str(flag), str(go)],
            env=child_env(instance.root_directory),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for flag in ready
    ]
    wait_for(lambda: all(flag.exists() for flag in ready) or any(s.poll() is not None for s in sweepers), "sweepers")
    go.touch()
    outputs = [s.communicate(timeout=DEADLINE)[0].strip() for s in sweepers]
    assert [s.returncode for s in sweepers] == [0] * len(sweepers)
    claimed = [run_id for out in outputs for run_id in out.split(",") if run_id]
    assert sorted(claimed) == sorted(dead)  # every run failed by exactly one sweeper
    for run_id in dead:
        assert status(instance, run_id) == DagsterRunStatus.FAILURE
        assert len(failure_messages(instance, run_id)) == 1


def test_mark_run_failed(instance: DagsterInstance) -> None:
    run_id = started_run(instance, process_tags())  # alive as far as a sweep can tell
    assert mark_run_failed(instance, run_id, "batch child exited with -9") is True
    assert status(instance, run_id) == DagsterRunStatus.FAILURE
    assert failure_messages(instance, run_id) == ["batch child exited with -9"]

    assert mark_run_failed(instance, run_id, "again") is False
    assert failure_messages(instance, run_id) == ["batch child exited with -9"]
    assert mark_run_failed(instance, "no-such-run", "x") is False

    done = started_run(instance, process_tags())
    instance.report_dagster_event(
        DagsterEvent(event_type_value=DagsterEventType.RUN_SUCCESS.value, job_name="probe"), run_id=done
    )
    before = instance.get_run_by_id(done)
    assert mark_run_failed(instance, done, "late") is False
    assert instance.get_run_by_id(done) == before
    assert status(instance, done) == DagsterRunStatus.SUCCESS
    assert failure_messages(instance, done) == []

"""Fail runs whose process died, so no run stays STARTED forever.

A run executed in-process (the `preprocess` CLI, a batch child, a sensor's launcher) is only moved
to a finished status by the process executing it. If that process is killed (kill -9, OOM killer)
or crashes, the run stays STARTED and blocks whatever waits on it. Such runs carry tags naming the
executing process (host, pid, process start time); `fail_dead_runs`, called at the start of every
CLI invocation and sensor tick, marks failed those of this host whose process is gone.

Only runs tagged with this host are judged: a pid means nothing on another host, and runs executed
elsewhere (another machine, a Kubernetes pod, a shared Postgres instance) are left to their own
host. Dagster is imported lazily so the CLI can compute tags without loading it.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dagster import DagsterInstance, DagsterRun

HOST_TAG = "scrna_assets/host"
PID_TAG = "scrna_assets/pid"
# /proc/<pid>/stat field 22 (clock ticks since boot): a reused pid has another start time.
PROCESS_START_TAG = "scrna_assets/process_start"

_PROC = Path("/proc")
_LOCK_NAME = ".scrna_assets_run_liveness.lock"


def _read_stat(pid: int) -> tuple[str, str]:
    """(state, start time) of `pid` from /proc/<pid>/stat; FileNotFoundError when it is gone.

    The command name (field 2) may contain spaces and parentheses, so fields are counted from the
    last ')'.
    """
    text = (_PROC / str(pid) / "stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], fields[19]  # field 3 (state) and field 22 (starttime)


def process_tags(pid: int | None = None) -> dict[str, str]:
    """Tags identifying the process that executes a run (this process by default).

    Put them on the run when it is created, so a later sweep can tell whether its executor lives.
    Without /proc (not Linux) the start time is omitted and only the pid is checked.
    """
    pid = os.getpid() if pid is None else pid
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(pid)}
    if _PROC.is_dir():
        try:
            tags[PROCESS_START_TAG] = _read_stat(pid)[1]
        except FileNotFoundError:
            raise ProcessLookupError(f"no process with pid {pid}") from None
    return tags


def process_is_gone(tags: Mapping[str, str]) -> bool:
    """True only when `tags` name this host and no process with that pid and start time exists.

    Anything that cannot be judged here (another host, no or malformed pid tag) is False, so a
    sweep never fails a run it cannot see. A zombie has finished running, so it counts as gone.
    """
    if tags.get(HOST_TAG) != socket.gethostname():
        return False
    try:
        pid = int(tags[PID_TAG])
    except (KeyError, ValueError):
        return False
    if pid <= 0:
        return False
    if not _PROC.is_dir():  # no /proc: the pid alone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    try:
        state, start = _read_stat(pid)
    except (FileNotFoundError, ProcessLookupError):
        return True
    if state in ("Z", "X"):
        return True
    expected = tags.get(PROCESS_START_TAG)
    return expected is not None and expected != start


@contextmanager
def _host_lock(instance: DagsterInstance) -> Iterator[None]:
    """Serialise sweeps on this host, so two processes do not both fail the same run.

    Run storage has no compare-and-set on status; since only this host's runs are failed here, a
    host-local file lock (in the instance's directory, else the temp directory) is enough.
    """
    for directory in (instance.root_directory, tempfile.gettempdir()):
        try:
            handle = open(Path(directory) / _LOCK_NAME, "a")  # noqa: SIM115
            break
        except OSError:
            continue
    else:
        raise OSError("no writable directory for the run liveness lock")
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _report_failed(instance: DagsterInstance, run: DagsterRun, message: str) -> None:
    """RUN_FAILURE with reason UNEXPECTED_TERMINATION (what Dagster uses for a dead run worker)."""
    from dagster._core.events import JobFailureData, RunFailureReason

    instance.report_run_failed(
        run,
        message=message,
        job_failure_data=JobFailureData(error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION),
    )


def fail_dead_runs(instance: DagsterInstance) -> list[str]:
    """Mark failed the unfinished runs of this host whose executing process is gone; return their ids.

    Safe to call from several processes at once: sweeps on a host are serialised and each run's
    status is re-read before it is failed, so a run is failed once.
    """
    from dagster import DagsterRunStatus, RunsFilter

    host = socket.gethostname()
    statuses = [
        DagsterRunStatus.NOT_STARTED,  # only ever with our tags, given the tag filter
        DagsterRunStatus.STARTING,
        DagsterRunStatus.STARTED,
        DagsterRunStatus.CANCELING,
    ]
    candidates = instance.get_runs(RunsFilter(statuses=statuses, tags={HOST_TAG: host}))
    if not any(process_is_gone(run.tags) for run in candidates):
        return []  # the common case: no lock, no writes
    failed: list[str] = []
    with _host_lock(instance):
        for candidate in candidates:
            run = instance.get_run_by_id(candidate.run_id)  # another sweep may have failed it
            if run is None or run.status not in statuses or not process_is_gone(run.tags):
                continue
            pid = run.tags.get(PID_TAG)
            message = f"the process running it (pid {pid} on {host}) is gone (killed or crashed); marked failed by scrna_assets"
            _report_failed(instance, run, message)
            failed.append(run.run_id)
    return failed


def mark_run_failed(instance: DagsterInstance, run_id: str, reason: str) -> bool:
    """Fail `run_id` for a caller that knows its process died (a batch parent whose child died).

    Returns whether anything changed: False for an unknown run or one already SUCCESS, FAILURE or
    CANCELED (the child finished it, or a sweep got there first).
    """
    from dagster import DagsterRunStatus

    finished = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    with _host_lock(instance):
        run = instance.get_run_by_id(run_id)
        if run is None or run.status in finished:
            return False
        _report_failed(instance, run, reason)
    return True

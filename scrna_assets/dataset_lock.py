"""One run per dataset: an exclusive ``flock`` on ``<interim>/.locks/<name>.lock``.

The lock is held for a whole run (taken before its first write, released after its last
deletion), so no run ever deletes or replaces what another run is writing. It is re-entrant
within a process: the run takes it once, and the steps and the IO manager inside that run re-enter
it. The lock file names its holder (run id, pid, host, since when), so a refused run can say who
has the dataset. The OS releases a ``flock`` when its process dies, so a killed run never leaves
the dataset locked.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

_HELD: dict[str, list[int]] = {}  # lock file -> [file descriptor, depth] for the locks this process holds


class DatasetBusyError(RuntimeError):
    """Another run holds this dataset's lock."""


def describe_holder(record: str) -> str:
    """``run <id> (pid N on <host>, since <time>)`` from a lock file's content."""
    try:
        holder = json.loads(record)
    except ValueError:
        return "another run"
    run = f"run {holder['run_id']}" if holder.get("run_id") else "a run"
    return f"{run} (pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')})"


class DatasetLock:
    """``with DatasetLock(path, dataset, run_id):`` holds the dataset for the body, or raises
    ``DatasetBusyError`` at once (never waits) naming the run that holds it."""

    def __init__(self, path: Path, dataset: str, run_id: str = "") -> None:
        self.path = path
        self.dataset = dataset
        self.run_id = run_id

    @property
    def held_here(self) -> bool:
        return str(self.path) in _HELD

    def acquire(self) -> None:
        key = str(self.path)
        if key in _HELD:
            _HELD[key][1] += 1
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # no truncation: the holder's record stays readable
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(os.pread(fd, 4096, 0).decode(errors="replace"))
            os.close(fd)
            raise DatasetBusyError(
                f"dataset {self.dataset!r} is busy: {holder} holds it ({self.path}); "
                "this run wrote and deleted nothing; try again when that run has finished"
            ) from None
        record = {
            "run_id": self.run_id, "pid": os.getpid(), "host": socket.gethostname(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        except OSError:  # e.g. disk full: the record only informs a refused run; the lock itself holds
            pass
        _HELD[key] = [fd, 1]

    def release(self) -> None:
        key = str(self.path)
        held = _HELD.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del _HELD[key]
            os.close(held[0])  # closing the last descriptor releases the flock

    def __enter__(self) -> DatasetLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

"""Run a command as a child process and measure it: wall time, peak RSS, an RSS timeline.

Peak RSS comes from two sources that agree when the child has no children of its own:

* ``os.wait4`` rusage ``ru_maxrss``: the kernel's exact high-water mark of the child process
  (for a child that spawned and waited for processes, the largest of them, not their sum);
* sampling ``/proc``: the summed RSS of the child and all its descendants every ``interval``
  seconds, which catches a process tree but can miss a spike shorter than the interval.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Measurement:
    command: list[str]
    exit_code: int
    wall_seconds: float
    user_seconds: float
    system_seconds: float
    peak_rss_bytes: int
    """``ru_maxrss`` of the child (wait4)."""
    peak_tree_rss_bytes: int
    """Largest sampled sum of RSS over the child and its descendants."""
    stdout: str
    stderr: str
    timeline: list[tuple[float, int]] = field(default_factory=list)
    """(seconds since start, tree RSS bytes) samples."""

    def peak_between(self, start: float, end: float) -> int:
        return max((rss for t, rss in self.timeline if start <= t <= end), default=0)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(pid: int) -> int:
    """Summed RSS of ``pid`` and all its descendants (0 once it is gone)."""
    tree = _children()
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += _rss(current)
        stack.extend(tree.get(current, []))
    return total


def run_measured(
    command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, interval: float = 0.05
) -> Measurement:
    """Run ``command`` to completion; stdout and stderr are captured (files, so no pipe fills up)."""
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-{os.getpid()}-{time.monotonic_ns()}"
    with open(f"{out_path}.out", "w+b") as out, open(f"{out_path}.err", "w+b") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=err)
        timeline: list[tuple[float, int]] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                timeline.append((time.perf_counter() - started, tree_rss(process.pid)))
                done.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            done.set()
            sampler.join()
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    for suffix in (".out", ".err"):
        Path(f"{out_path}{suffix}").unlink(missing_ok=True)
    return Measurement(
        command=command,
        exit_code=process.returncode,
        wall_seconds=wall,
        user_seconds=usage.ru_utime,
        system_seconds=usage.ru_stime,
        peak_rss_bytes=usage.ru_maxrss * 1024,
        peak_tree_rss_bytes=max((rss for _, rss in timeline), default=0),
        stdout=stdout,
        stderr=stderr,
        timeline=timeline,
    )

"""Run a command as a child process and measure it: wall time, peak RSS, an RSS/PSS timeline.

Peak RSS comes from two sources that agree when the child has no children of its own:

* ``os.wait4`` rusage ``ru_maxrss``: the kernel's exact high-water mark of the child process
  (for a child that spawned and waited for processes, the largest of them, not their sum);
* sampling ``/proc``: the summed RSS of the child and all its descendants every ``interval``
  seconds, which catches a process tree but can miss a spike shorter than the interval.

Summed RSS counts a page shared by a forked parent and its children (copy-on-write) once per
process, so it overstates what a forking tree uses. The same samples therefore also sum PSS
(each shared page split among the processes that map it), which adds up to the memory the tree
really holds. Both come from one read of ``/proc/<pid>/smaps_rollup`` per process (a walk of its
page tables, about 2 ms per GB), on every ``PSS_EVERY``-th sample; the others read RSS from
``statm``. Where smaps_rollup is unreadable, the PSS figures are 0 (unavailable).

Linux carries the RSS high-water mark of the process that forked (or vforked) a child into the
child's ``ru_maxrss`` at ``exec``; measured from the benchmark itself (hundreds of MB of pyarrow,
Dagster and result tables), every child would report at least that. So the command is started
by a tiny launcher process (``python -I -S``, ~10 MB), which does the ``wait4`` and reports the
rusage: the figure is then the command's own peak, give or take the launcher's few MB.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
PSS_EVERY = 4
"""Samples per PSS sample: RSS every ``interval`` (0.05 s), PSS every 0.2 s."""


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
    timeline: list[tuple[float, int, int]] = field(default_factory=list)
    """(seconds since start, tree RSS bytes, tree PSS bytes) samples."""
    machine_busy_seconds: float = 0.0
    """CPU seconds all processes on the machine used meanwhile (``/proc/stat``); minus this
    command's own CPU it shows other load that slowed the measurement down."""
    peak_tree_pss_bytes: int = 0
    """Largest sampled sum of PSS over the same tree; 0 when smaps_rollup is unreadable."""

    @property
    def other_cpu_seconds(self) -> float:
        return max(0.0, self.machine_busy_seconds - self.user_seconds - self.system_seconds)

    def peak_between(self, start: float, end: float, pss: bool = False) -> int:
        """Largest tree RSS (or PSS) sampled between ``start`` and ``end`` seconds."""
        column = 2 if pss else 1
        return max((sample[column] for sample in self.timeline if start <= sample[0] <= end), default=0)


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


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of ``pid`` in bytes, both from one read of smaps_rollup (one page-table walk,
    so PSS <= RSS even while the process grows or forks); (RSS from statm, 0) if smaps_rollup is
    unreadable (no permission, old kernel)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
            figures = dict(line.split()[:2] for line in handle if line.startswith((b"Rss:", b"Pss:")))
        return int(figures[b"Rss:"]) * 1024, int(figures[b"Pss:"]) * 1024
    except (OSError, KeyError, ValueError):
        return _rss(pid), 0


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has been busy (not idle, not waiting for I/O) since boot."""
    try:
        with open("/proc/stat", "rb") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0  # time the hypervisor gave to others: not ours
    return (sum(fields[:8]) - idle - steal) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    tree = _children()
    found, stack = [], list(tree.get(pid, []))
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(tree.get(current, []))
    return found


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def tree_memory(pid: int, include_root: bool = True, pss: bool = True) -> tuple[int, int]:
    """Summed (RSS, PSS) of ``pid`` (unless not ``include_root``) and all its descendants, from
    one walk of ``/proc`` so both cover the same processes. ``pss=False``: RSS from ``statm``
    only (PSS 0), ~250x cheaper than a page-table walk (3 ms for a 1.5 GB tree)."""
    tree = _children()
    rss = pss_sum = 0
    stack = [pid] if include_root else list(tree.get(pid, []))
    while stack:
        current = stack.pop()
        memory = _memory(current) if pss else (_rss(current), 0)
        rss, pss_sum = rss + memory[0], pss_sum + memory[1]
        stack.extend(tree.get(current, []))
    return rss, pss_sum


def tree_rss(pid: int, include_root: bool = True) -> int:
    """Summed RSS of ``pid`` (unless not ``include_root``) and all its descendants."""
    return tree_memory(pid, include_root)[0]


# The launcher: no site packages, nothing imported but os/sys/json. It forwards the exit code and
# writes the child's rusage as JSON to the file named in argv[1].
_LAUNCHER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as handle:
    json.dump({"maxrss_kb": usage.ru_maxrss, "utime": usage.ru_utime, "stime": usage.ru_stime}, handle)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(
    command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, interval: float = 0.05
) -> Measurement:
    """Run ``command`` to completion; stdout and stderr are captured (files, so no pipe fills up)."""
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-{os.getpid()}-{time.monotonic_ns()}"
    usage_path = Path(f"{out_path}.rusage")
    launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(usage_path), *command]
    with open(f"{out_path}.out", "w+b") as out, open(f"{out_path}.err", "w+b") as err:
        started = time.perf_counter()
        busy_before = busy_cpu_seconds()
        process = subprocess.Popen(launcher, env=env, cwd=cwd, stdout=out, stderr=err)
        timeline: list[tuple[float, int, int]] = []
        done = threading.Event()

        def sample() -> None:
            count = 0
            while not done.is_set():
                # not the launcher; PSS (a page-table walk, which also contends with the measured
                # processes' page faults) on every PSS_EVERY-th sample only
                memory = tree_memory(process.pid, include_root=False, pss=count % PSS_EVERY == 0)
                timeline.append((time.perf_counter() - started, *memory))
                count += 1
                done.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            _, status, _ = os.wait4(process.pid, 0)
        except BaseException:
            for pid in _descendants(process.pid):
                _kill(pid)
            process.kill()
            process.wait()
            raise
        finally:
            done.set()
            sampler.join()
        wall = time.perf_counter() - started
        busy = busy_cpu_seconds() - busy_before
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    try:
        usage = json.loads(usage_path.read_text())
    except (OSError, ValueError):  # the launcher itself failed
        usage = {"maxrss_kb": 0, "utime": 0.0, "stime": 0.0}
    for suffix in (".out", ".err", ".rusage"):
        Path(f"{out_path}{suffix}").unlink(missing_ok=True)
    return Measurement(
        command=command,
        exit_code=process.returncode,
        wall_seconds=wall,
        user_seconds=usage["utime"],
        system_seconds=usage["stime"],
        peak_rss_bytes=usage["maxrss_kb"] * 1024,
        peak_tree_rss_bytes=max((rss for _, rss, _ in timeline), default=0),
        stdout=stdout,
        stderr=stderr,
        timeline=timeline,
        machine_busy_seconds=busy,
        peak_tree_pss_bytes=max((pss for _, _, pss in timeline), default=0),
    )

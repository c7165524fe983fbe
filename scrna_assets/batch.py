"""A batch of datasets, each in its own process: a crash (segfault, ``os._exit``, OOM kill,
SIGKILL) fails that dataset only, and the batch goes on to write its summary.

Dataset processes are forked from a warm process that has imported the whole stack and loaded
numba's compiled loops (``warm_start``), so no dataset pays a Python start-up. A process that has
used polars (or numba's threads) cannot fork safely: polars' thread pool does not exist in the
child, which then hangs. So only a caller that promises to do no data work itself forks directly
(``fork_here``: the ``preprocess`` process, which only imports, starts processes, relays their
progress and records outcomes); any other caller (a test runner, a notebook) gets a forkserver
started for the purpose, which costs one Python start-up per caller, not per dataset. Either way
the parent's memory stays flat however many datasets the batch holds.

Up to ``--workers`` cores' worth of datasets run at once (``Batch.cost``): a one-chunk file, most
of a public corpus, keeps about one core busy, so two run side by side on two cores; a larger file
counts as two. Each dataset process reads its input's size from the header and waits for the
parent's go-ahead before its run (``Batch.let_run``), so on two cores a large file runs alone and
two large files never hold memory at once. The CLI's parent builds the Dagster job and instance
before forking, so a dataset process starts its run at once. Each dataset's lines reach the
reporter whole and in file order (``OrderedRelay``).
"""

from __future__ import annotations

import gc
import importlib
import multiprocessing
import multiprocessing.context
import multiprocessing.process
import os
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Protocol

from scrna_assets.dataset_lock import DatasetBusyError
from scrna_assets.inputs import datasets_by_name
from scrna_assets.dataset_names import dataset_name
from scrna_assets.resources import PipelineSettings
from scrna_assets.run_liveness import fail_dead_runs, mark_run_failed
from scrna_assets.runner import StepResult, cli_instance, steps_job
from scrna_assets.steps import BY_NUMBER, DATASET_STEPS
from scrna_assets.summary import FAILED, DatasetOutcome
from scrna_assets.worker import DatasetTask, discard_partial, run_task

WARM_START = "scrna_assets.warm_start"
WORKER_MEMORY_BYTES = 1.5e9


def _process_context(fork_here: bool) -> multiprocessing.context.BaseContext:
    if fork_here:
        importlib.import_module(WARM_START)  # the children inherit the loaded loops
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([WARM_START])
    return context


class Reporter(Protocol):
    """Receives progress, so the batch itself never prints."""

    def file(self, index: int, total: int, dataset: str) -> None: ...

    def step(self, step: int, result: StepResult | None) -> None: ...

    def progress(self, step: int, done: int, total: int) -> None: ...

    def note(self, line: str) -> None: ...


def crash_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"crashed (signal {-exitcode})"
    return f"crashed (exit code {exitcode})"


@dataclass
class _Process:
    """A dataset process as the parent follows it."""

    task: DatasetTask
    process: multiprocessing.process.BaseProcess
    receiver: Connection
    reporter: Reporter
    started: float = field(default_factory=time.perf_counter)
    cells: int | None = None
    """Cells of the input, once the process has read them from its header."""
    done: object | None = None
    running: int | None = None
    last: int | None = None
    waiting: bool = False
    """It has sent its size and waits for the go-ahead."""
    let: bool = False
    """It has had the go-ahead."""


class Batch:
    """Runs tasks in dataset processes and turns a process that died into a failed dataset."""

    def __init__(
        self, settings: PipelineSettings, reporter: Reporter, debug: bool = False, fork_here: bool = False, workers: int = 1
    ) -> None:
        self.processes = _process_context(fork_here)
        self.fork_here = fork_here
        self.settings = settings
        self.reporter = reporter
        self.debug = debug
        self.workers = workers
        self._jobs_built: set[tuple[int, ...]] = set()
        self.instance = cli_instance()
        for run_id in fail_dead_runs(self.instance):
            reporter.note(f"Marked run {run_id} failed: its process is gone")

    def task(self, dataset: str, path: Path | None, steps: tuple[int, ...], **options: object) -> DatasetTask:
        task = DatasetTask.of(self.settings, dataset, path, steps, debug=self.debug, **options)
        if steps not in self._jobs_built:  # built here once, inherited by every forked dataset process
            steps_job(task.settings, steps)
            self._jobs_built.add(steps)
        return task

    def start(self, task: DatasetTask, reporter: Reporter) -> _Process:
        ours, theirs = self.processes.Pipe()
        process = self.processes.Process(target=run_task, args=(task, theirs), name=f"scrna-{task.dataset or 'hgnc'}")
        if self.fork_here:
            gc.freeze()  # the child's collector then skips the parent's objects instead of touching (copying) their pages
        process.start()
        if self.fork_here:
            gc.unfreeze()  # the child keeps its own frozen copy; the parent collects as before
        theirs.close()  # the child's end: end of file on the pipe once the child is gone
        return _Process(task, process, ours, reporter)

    @staticmethod
    def receive(running: _Process) -> bool:
        """Pass on one message of the process; False once it has gone (end of file on its pipe)."""
        try:
            message = running.receiver.recv()
        except EOFError:
            running.process.join()
            running.receiver.close()
            return False
        kind, *rest = message
        if kind == "size":
            running.cells, running.waiting = rest[0], True
        elif kind == "step":
            running.running = rest[0] if rest[1] is None else None
            running.last = rest[0]
            running.reporter.step(*rest)
        elif kind == "progress":
            running.reporter.progress(*rest)
        elif kind == "note":
            running.reporter.note(rest[0])
        else:
            running.done = rest[0]
        return True

    def cost(self, running: _Process) -> int:
        """Cores a dataset process keeps busy: a file of more than one chunk two (it converts and
        encodes on two threads, and holds the most memory); a one-chunk file, or one whose size is
        not known (yet), about one."""
        return 2 if running.cells is not None and running.cells > self.settings.chunk_size else 1

    def let_run(self, processes: list[_Process]) -> None:
        """Give the go-ahead to each process waiting with its size when its cost fits beside the
        processes already let run: on two cores, a file larger than one chunk waits until it is alone."""
        for waiting in (p for p in processes if p.waiting):
            busy = sum(self.cost(p) for p in processes if p.let and p is not waiting)
            if busy + self.cost(waiting) <= self.workers or busy == 0:
                waiting.waiting, waiting.let = False, True
                try:
                    waiting.receiver.send("go")
                except OSError:  # it has just died: its end of file comes next
                    pass

    def crashed(self, running: _Process) -> StepResult:
        """The record after a dataset process died: its Dagster run marked failed at once, its
        partial interim removed under the lock (unless another run has taken the dataset since)."""
        task, exitcode, reporter = running.task, running.process.exitcode, running.reporter
        step = running.running or running.last or task.steps[0]
        result = StepResult(step, BY_NUMBER[step].asset, False, crash_message(exitcode))
        reporter.step(step, result)
        try:
            mark_run_failed(self.instance, task.run_id, f"the dataset process {crash_message(exitcode)}")
        except Exception as error:  # the record could not be updated: say so, and go on with the batch
            reporter.note(f"Run {task.run_id} not marked failed: {error}")
        if task.dataset and task.steps == DATASET_STEPS:
            layout = task.layout
            try:
                with layout.lock(task.dataset, task.run_id):
                    removed = discard_partial(layout, task.dataset)
                reporter.note(f"Cleanup after crash: {', '.join(str(p) for p in removed) or 'nothing partial was left'}")
            except (DatasetBusyError, OSError) as error:
                reporter.note(f"No cleanup after crash: {error}")
        return result

    def hgnc_step(self) -> tuple[StepResult, str]:
        """Step 1 in its own process (it uses polars, which must never run in this parent)."""
        running = self.start(self.task("", None, (1,)), self.reporter)
        while self.receive(running):
            pass
        return running.done if running.done is not None else (self.crashed(running), "")

    def outcome(self, running: _Process) -> DatasetOutcome:
        """The dataset's summary row once its process has gone."""
        task = running.task
        outcome = running.done
        if not isinstance(outcome, DatasetOutcome):
            crash = self.crashed(running)
            outcome = DatasetOutcome(task.dataset, str(task.path), FAILED, f"step {crash.step} ({crash.asset}): {crash.message}")
        outcome.seconds = round(time.perf_counter() - running.started, 3)
        return outcome

    def datasets(self, tasks: list[DatasetTask], relay: OrderedRelay, channels: list[Reporter]) -> list[DatasetOutcome]:
        """Every task in its own process, up to ``workers`` cores' worth at once (``cost``, ``let_run``);
        each reports through its channel of the relay, so the output stays one dataset at a time.
        If this parent fails (a reporter that cannot print, Ctrl-C), the running processes are
        stopped and every line kept so far is printed before the error goes on."""
        waiting = list(zip(tasks, channels))
        running: dict[Connection, _Process] = {}
        outcomes: dict[str, DatasetOutcome] = {}
        try:
            while waiting or running:
                # a new process only while none waits for its turn and the known costs leave a core
                while waiting and not any(p.waiting for p in running.values()) and sum(map(self.cost, running.values())) < self.workers:
                    task, channel = waiting.pop(0)
                    started = self.start(task, channel)
                    running[started.receiver] = started
                for receiver in wait(list(running)):
                    process = running[receiver]
                    if not self.receive(process):
                        del running[receiver]
                        outcomes[process.task.run_id] = self.outcome(process)
                        relay.close(process.reporter)
                self.let_run(list(running.values()))
        except BaseException:
            for process in running.values():
                process.process.terminate()
                process.process.join()
            relay.flush()
            raise
        return [outcomes[task.run_id] for task in tasks]


class OrderedRelay:
    """Reporters for datasets that run at once, each dataset's lines kept together and in file
    order: the first open channel prints as it goes (with its progress bar); the others keep their
    lines until every channel before them has closed (their progress, stale by then, is dropped)."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.channels: list[_Channel] = []

    def open(self) -> Reporter:
        channel = _Channel(self.reporter, live=not self.channels)
        self.channels.append(channel)
        return channel

    def flush(self) -> None:
        """Print every line kept so far (the batch is ending early)."""
        for channel in self.channels:
            channel.go_live()
        self.channels = []

    def close(self, channel: Reporter) -> None:
        assert isinstance(channel, _Channel)
        channel.closed = True
        while self.channels and self.channels[0].closed:
            self.channels.pop(0)
            if self.channels:
                self.channels[0].go_live()


class _Channel:
    def __init__(self, reporter: Reporter, live: bool) -> None:
        self.reporter = reporter
        self.live = live
        self.closed = False
        self.kept: list[tuple[str, tuple]] = []

    def _pass(self, method: str, *args: object) -> None:
        if self.live:
            getattr(self.reporter, method)(*args)
        else:
            self.kept.append((method, args))

    def go_live(self) -> None:
        self.live = True
        for method, args in self.kept:
            getattr(self.reporter, method)(*args)
        self.kept = []

    def file(self, index: int, total: int, dataset: str) -> None:
        self._pass("file", index, total, dataset)

    def step(self, step: int, result: StepResult | None) -> None:
        self._pass("step", step, result)

    def progress(self, step: int, done: int, total: int) -> None:
        if self.live:
            self.reporter.progress(step, done, total)

    def note(self, line: str) -> None:
        self._pass("note", line)


def auto_workers() -> int:
    """One dataset process per core, as many as the available memory holds at ~1.5 GB each (the
    peak of a dataset process at the default chunk size)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/proc/meminfo") as meminfo:
            available_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return cores
    return max(1, min(cores, int(available_kb * 1024 // WORKER_MEMORY_BYTES)))


def run_batch(
    files: list[Path], settings: PipelineSettings, reporter: Reporter, steps: tuple[int, ...] = DATASET_STEPS,
    skip_existing: bool = False, debug: bool = False, fork_here: bool = False,
) -> list[DatasetOutcome]:
    """Step 1 once, then every file as its own dataset process: one failure never stops the others.
    ``steps`` other than 2-5 runs those steps only (the step commands)."""
    batch = Batch(settings, reporter, debug, fork_here, workers=settings.workers or auto_workers())
    digest, hgnc = "", None
    if steps == DATASET_STEPS:
        hgnc, digest = batch.hgnc_step()
    names, errors = datasets_by_name(files)
    refused = {Path(e.path): e for e in errors}
    by_file = {path: name for name, path in names.items()}
    relay = OrderedRelay(reporter)
    outcomes: list[DatasetOutcome | DatasetTask] = []
    tasks, channels = [], []
    for index, path in enumerate(sorted(files), start=1):
        channel = relay.open()
        name = by_file.get(path) or _name_or_empty(path)
        channel.file(index, len(files), name or path.name)
        if path in refused:
            channel.note(f"✗ {refused[path]}")
            outcomes.append(DatasetOutcome(name, str(path), FAILED, refused[path].problem))
            relay.close(channel)
        elif hgnc is not None and not hgnc.success:
            outcomes.append(DatasetOutcome(name, str(path), FAILED, f"step 1 (hgnc_mapper): {hgnc.message}"))
            relay.close(channel)
        else:
            task = batch.task(name, path, steps, skip_existing=skip_existing, hgnc_digest=digest)
            outcomes.append(task)
            tasks.append(task)
            channels.append(channel)
    done = iter(batch.datasets(tasks, relay, channels))
    return [next(done) if isinstance(row, DatasetTask) else row for row in outcomes]


def run_hgnc(settings: PipelineSettings, reporter: Reporter, debug: bool = False, fork_here: bool = False) -> StepResult:
    """Step 1 alone (``preprocess step1-hgnc-mapper``)."""
    return Batch(settings, reporter, debug, fork_here).hgnc_step()[0]


def _name_or_empty(path: Path) -> str:
    try:
        return dataset_name(path)
    except ValueError:
        return ""

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
"""

from __future__ import annotations

import importlib
import multiprocessing
import multiprocessing.context
import time
from pathlib import Path
from typing import Protocol

from scrna_assets.dataset_lock import DatasetBusyError
from scrna_assets.inputs import datasets_by_name
from scrna_assets.dataset_names import dataset_name
from scrna_assets.resources import PipelineSettings
from scrna_assets.run_liveness import fail_dead_runs, mark_run_failed
from scrna_assets.runner import StepResult, cli_instance
from scrna_assets.steps import BY_NUMBER, DATASET_STEPS
from scrna_assets.summary import FAILED, DatasetOutcome
from scrna_assets.worker import DatasetTask, discard_partial, run_task

WARM_START = "scrna_assets.warm_start"


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


class Batch:
    """Runs tasks in dataset processes and turns a process that died into a failed dataset."""

    def __init__(self, settings: PipelineSettings, reporter: Reporter, debug: bool = False, fork_here: bool = False) -> None:
        self.processes = _process_context(fork_here)
        self.settings = settings
        self.reporter = reporter
        self.debug = debug
        self.instance = cli_instance()
        for run_id in fail_dead_runs(self.instance):
            reporter.note(f"Marked run {run_id} failed: its process is gone")

    def task(self, dataset: str, path: Path | None, steps: tuple[int, ...], **options: object) -> DatasetTask:
        return DatasetTask.of(self.settings, dataset, path, steps, debug=self.debug, **options)

    def run(self, task: DatasetTask) -> tuple[object | None, int | None, int | None]:
        """(what the process sent as "done" or None, its exit code, the step it was in) once it has ended."""
        receiver, sender = self.processes.Pipe(duplex=False)
        process = self.processes.Process(target=run_task, args=(task, sender), name=f"scrna-{task.dataset or 'hgnc'}")
        process.start()
        sender.close()  # the child's end: end of file on the pipe once the child is gone
        done, running, last = None, None, None
        while True:
            try:
                message = receiver.recv()
            except EOFError:
                break
            if message[0] == "step":
                running = message[1] if message[2] is None else None
                last = message[1]
                self.reporter.step(message[1], message[2])
            elif message[0] == "progress":
                self.reporter.progress(*message[1:])
            elif message[0] == "note":
                self.reporter.note(message[1])
            else:
                done = message[1]
        process.join()
        receiver.close()
        return done, process.exitcode, running or last

    def crashed(self, task: DatasetTask, exitcode: int | None, running: int | None) -> StepResult:
        """The record after a dataset process died: its Dagster run marked failed at once, its
        partial interim removed under the lock (unless another run has taken the dataset since)."""
        step = running or task.steps[0]
        result = StepResult(step, BY_NUMBER[step].asset, False, crash_message(exitcode))
        self.reporter.step(step, result)
        try:
            mark_run_failed(self.instance, task.run_id, f"the dataset process {crash_message(exitcode)}")
        except Exception as error:  # the record could not be updated: say so, and go on with the batch
            self.reporter.note(f"Run {task.run_id} not marked failed: {error}")
        if task.dataset and task.steps == DATASET_STEPS:
            layout = task.layout
            try:
                with layout.lock(task.dataset, task.run_id):
                    removed = discard_partial(layout, task.dataset)
                self.reporter.note(f"Cleanup after crash: {', '.join(str(p) for p in removed) or 'nothing partial was left'}")
            except (DatasetBusyError, OSError) as error:
                self.reporter.note(f"No cleanup after crash: {error}")
        return result

    def hgnc_step(self) -> tuple[StepResult, str]:
        """Step 1 in its own process (it uses polars, which must never run in this parent)."""
        task = self.task("", None, (1,))
        done, exitcode, _ = self.run(task)
        return done if done is not None else (self.crashed(task, exitcode, 1), "")

    def dataset(self, dataset: str, path: Path, steps: tuple[int, ...], **options: object) -> DatasetOutcome:
        task = self.task(dataset, path, steps, **options)
        started = time.perf_counter()
        done, exitcode, running = self.run(task)
        if not isinstance(done, DatasetOutcome):
            crash = self.crashed(task, exitcode, running)
            done = DatasetOutcome(dataset, str(path), FAILED, f"step {crash.step} ({crash.asset}): {crash.message}")
        outcome = done
        outcome.seconds = round(time.perf_counter() - started, 3)
        return outcome


def run_batch(
    files: list[Path], settings: PipelineSettings, reporter: Reporter, steps: tuple[int, ...] = DATASET_STEPS,
    skip_existing: bool = False, debug: bool = False, fork_here: bool = False,
) -> list[DatasetOutcome]:
    """Step 1 once, then every file as its own dataset process: one failure never stops the others.
    ``steps`` other than 2-5 runs those steps only (the step commands)."""
    batch = Batch(settings, reporter, debug, fork_here)
    digest, hgnc = "", None
    if steps == DATASET_STEPS:
        hgnc, digest = batch.hgnc_step()
    names, errors = datasets_by_name(files)
    refused = {Path(e.path): e for e in errors}
    by_file = {path: name for name, path in names.items()}
    outcomes = []
    for index, path in enumerate(sorted(files), start=1):
        if path in refused:
            shown = _name_or_empty(path)
            reporter.file(index, len(files), shown or path.name)
            reporter.note(f"✗ {refused[path]}")
            outcomes.append(DatasetOutcome(shown, str(path), FAILED, refused[path].problem))
            continue
        name = by_file[path]
        reporter.file(index, len(files), name)
        if hgnc is not None and not hgnc.success:
            outcomes.append(DatasetOutcome(name, str(path), FAILED, f"step 1 (hgnc_mapper): {hgnc.message}"))
        else:
            outcomes.append(batch.dataset(name, path, steps, skip_existing=skip_existing, hgnc_digest=digest))
    return outcomes


def run_hgnc(settings: PipelineSettings, reporter: Reporter, debug: bool = False, fork_here: bool = False) -> StepResult:
    """Step 1 alone (``preprocess step1-hgnc-mapper``)."""
    return Batch(settings, reporter, debug, fork_here).hgnc_step()[0]


def _name_or_empty(path: Path) -> str:
    try:
        return dataset_name(path)
    except ValueError:
        return ""

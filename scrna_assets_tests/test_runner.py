"""The runner: steps 2-5 as one run with progress per step, failures put on the right step, a
failed ERROR check blocking the upload, and memory released between the files of a batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scrna_assets.core.synthetic import write_synthetic_h5ad

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def mid_size_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20,000 cells x 3,000 genes, ~300 non-zeros per cell (~50 MB)."""
    return write_synthetic_h5ad(tmp_path_factory.mktemp("mid") / "mid.h5ad", 20_000, 3_000, 300, seed=1)


def peak_rss_of_batch(folder: Path, work: Path) -> int:
    """Peak RSS (kB) of a `preprocess run-all --batch-mode` process, from its own rusage."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRNA_", "DAGSTER_HOME", "HF_"))}
    env["DAGSTER_HOME"] = str(work / "home")
    (work / "home").mkdir(parents=True)
    process = subprocess.Popen(
        [str(BIN / "preprocess"), "run-all", str(folder), "--batch-mode", "--offline", "--chunk-size", "5000"],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, process.stderr.read().decode()[-2000:]
    return usage.ru_maxrss


def test_peak_rss_does_not_grow_with_the_number_of_files(mid_size_file: Path, tmp_path: Path) -> None:
    """Three files vs six: a leak of more than ~10 MB per file would show.

    The first files warm up (lazy imports, Dagster's caches: peaks of 493, 552, 556, 556, 561 MB
    after files 1-5 of 20k cells were measured, with RSS between files flat at ~460 MB), so the
    comparison starts from three files.
    """
    peaks = {}
    for count in (3, 6):
        folder = tmp_path / f"files_{count}"
        folder.mkdir()
        for index in range(count):
            os.link(mid_size_file, folder / f"file_{index}.h5ad")
        peaks[count] = peak_rss_of_batch(folder, tmp_path / f"run_{count}")
    assert peaks[6] <= peaks[3] * 1.05, peaks


class Recorder:
    """A reporter that keeps what the runner reports, in order."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def file(self, index: int, total: int, dataset: str) -> None: ...

    def step(self, step: int, result) -> None:
        line = f"start {step}" if result is None else f"{'ok' if result.success else 'failed'} {step}"
        if result is not None and result.checks:  # as they stand when the step is reported
            line += f" ({len(result.checks)} checks; failed: {', '.join(sorted(result.failed_checks)) or 'none'})"
        self.lines.append(line)

    def note(self, line: str) -> None:
        self.lines.append(line)


def run_example(example_files, make_settings, instance, **settings: object):
    from scrna_assets.runner import PipelineRunner
    from scrna_assets_tests.inprocess import run_dataset_here

    h5ad, hgnc = example_files
    pipeline = make_settings(hgnc_file=str(hgnc), **settings)
    assert PipelineRunner(pipeline, instance).run_step(1).success
    reporter = Recorder()
    results, outcome = run_dataset_here(pipeline, instance, "example_cellxgene", h5ad, reporter)
    return results, reporter.lines, outcome


def test_steps_are_reported_as_they_run_in_one_run(example_files, make_settings, instance) -> None:
    results, lines, outcome = run_example(example_files, make_settings, instance)
    assert lines == [
        "start 2", "ok 2", "start 3", "ok 3", "start 4", "ok 4 (5 checks; failed: none)",
        "Cleanup: interim chunks of example_cellxgene removed", "start 5", "ok 5",
    ]
    assert [(r.step, r.success) for r in results] == [(2, True), (3, True), (4, True), (5, True)]
    assert all(r.figures["seconds"] > 0 for r in results)
    assert set(results[2].checks.values()) == {"PASSED"} and len(results[2].checks) == 5
    assert (outcome.status, outcome.message) == ("SUCCESS", "")
    assert len(instance.get_runs()) == 2  # hgnc_mapper, then steps 2-5 of the dataset


def test_failed_error_check_blocks_the_upload(example_files, make_settings, instance, hub, monkeypatch) -> None:
    """A donor in both splits (faked in the facts the checks read): the ERROR check fails, the
    upload does not run, and the dataset is reported failed with the check's name."""
    import scrna_assets.checks as checks

    real = checks.split_facts

    def leaking(folder, max_rows=None):
        facts = real(folder, max_rows)
        facts.donors["test"].add(sorted(facts.donors["train"])[0])
        return facts

    monkeypatch.setattr(checks, "split_facts", leaking)
    results, lines, outcome = run_example(example_files, make_settings, instance, repo_id="lab/cells")
    assert [(r.step, r.success) for r in results] == [(2, True), (3, True), (4, True)]
    assert lines[-2:] == ["ok 4 (5 checks; failed: no_donor_in_both_splits)", "Cleanup: interim chunks of example_cellxgene removed"]
    assert "start 5" not in lines
    assert results[-1].checks["no_donor_in_both_splits"] == "ERROR"
    assert (outcome.status, outcome.message) == (
        "FAILED", "failed checks: no_donor_in_both_splits",
    )
    assert hub.repos == {}


def test_crashed_check_fails_the_split_step(example_files, make_settings, instance, monkeypatch) -> None:
    import scrna_assets.checks as checks

    def crash(folder, max_rows=None):
        raise RuntimeError("facts unavailable")

    monkeypatch.setattr(checks, "split_facts", crash)
    results, lines, outcome = run_example(example_files, make_settings, instance)
    assert [(r.step, r.success) for r in results] == [(2, True), (3, True), (4, False)]
    assert lines[:-1] == ["start 2", "ok 2", "start 3", "ok 3", "start 4", "failed 4"]  # no check result was recorded
    assert lines[-1].startswith("Cleanup after failure:")
    assert results[-1].message == "split_checks: facts unavailable"
    assert outcome.status == "FAILED" and outcome.message.startswith("step 4 (train_test_splits): ")


def test_each_chunk_reaches_the_reporter_and_the_dagster_run_log(example_files, make_settings, instance) -> None:
    class Progress(Recorder):
        def progress(self, step: int, done: int, total: int) -> None:
            self.lines.append(f"{step}: {done}/{total}")

    from scrna_assets.runner import PipelineRunner
    from scrna_assets_tests.inprocess import run_dataset_here

    h5ad, hgnc = example_files
    settings = make_settings(hgnc_file=str(hgnc), chunk_size=1000)
    assert PipelineRunner(settings, instance).run_step(1).success
    reporter = Progress()
    run_dataset_here(settings, instance, "example_cellxgene", h5ad, reporter)
    thirds = ["1000/3000", "2000/3000", "3000/3000"]
    # the conversion also says (0, 3000) as soon as the file is open: the batch learns the size from it
    expected = {2: ["0/3000", *thirds], 3: thirds, 4: thirds}
    assert [line for line in reporter.lines if line[0] in "234" and "/" in line] == [f"{step}: {t}" for step in (2, 3, 4) for t in expected[step]]
    run = instance.get_runs()[0]
    logged = [e.user_message for e in instance.all_logs(run.run_id) if e.user_message.startswith(("parquet_chunks: ", "train_test_splits: "))]
    assert [m.split(" cells")[0] for m in logged] == [
        f"{asset}: {t.replace('000', ',000')}" for asset, step in (("parquet_chunks", 2), ("train_test_splits", 4)) for t in expected[step]
    ]

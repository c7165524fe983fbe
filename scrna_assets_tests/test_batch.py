"""`preprocess run-all --batch-mode` over a folder of good and bad files, as a user runs it:
exact summary, exit code, per-dataset logs, cleanup, skip-existing, step commands."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import anndata
import pandas as pd
import polars as pl
import pytest
from typer.testing import CliRunner

from scrna_assets.cli import app

FAKE_TOKEN = "hf_FAKEtoken0123456789abcdefSECRET"


@pytest.fixture
def batch_folder(tmp_path: Path, example_files, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two good files (one named with a space and @), a truncated h5ad, an h5ad with no X and a
    text file, in an empty working folder with DAGSTER_HOME unset."""
    monkeypatch.chdir(tmp_path)
    for name in ("DAGSTER_HOME", "HF_TOKEN", "SCRNA_HGNC_FILE"):
        monkeypatch.delenv(name, raising=False)
    h5ad, _ = example_files
    folder = tmp_path / "incoming"
    folder.mkdir()
    shutil.copy(h5ad, folder / "my data@set.h5ad")
    shutil.copy(h5ad, folder / "second.H5AD")
    (folder / "truncated.h5ad").write_bytes(h5ad.read_bytes()[:40_000])
    obs = pd.DataFrame({"development_stage": ["30-year-old stage"] * 3}, index=["a", "b", "c"])
    anndata.AnnData(obs=obs, var=pd.DataFrame(index=["G1", "G2"])).write_h5ad(folder / "no_x.h5ad")
    (folder / "notes.txt").write_text("not data")
    yield folder
    os.environ.pop("DAGSTER_HOME", None)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_batch_mode_summary_logs_and_cleanup(batch_folder: Path, example_files) -> None:
    root = batch_folder.parent
    before = snapshot(batch_folder)
    result = invoke("run-all", str(batch_folder), "--batch-mode", "--hgnc-file", str(example_files[1]))
    assert result.exit_code == 1
    out = result.output
    assert out.count("Ignored (not *.h5ad): notes.txt") == 1
    assert [line for line in out.splitlines() if line.startswith("PROCESSING FILE")] == [
        "PROCESSING FILE 1/4: my_data_set", "PROCESSING FILE 2/4: no_x",
        "PROCESSING FILE 3/4: second", "PROCESSING FILE 4/4: truncated",
    ]
    summary = out[out.index("BATCH SUMMARY") - 61 :]
    summary = re.sub(r"\(\d+\.\d s\)", "(S s)", summary)
    truncated_problem = re.search(r"truncated\.h5ad: cannot be opened as HDF5/h5ad \(.*\)", summary)
    assert truncated_problem is not None
    assert summary.splitlines()[:12] == [
        "=" * 60,
        "BATCH SUMMARY",
        "=" * 60,
        "Total: 4  Succeeded: 2  Failed: 2  Skipped: 0",
        "",
        "✓ my_data_set: 3000 cells, 2744 with age, train 2599 / test 145 (S s)",
        f"✗ no_x: step 2 (parquet_chunks): {batch_folder / 'no_x.h5ad'}: has no count matrix (no raw.X, no layers['counts'], no X)",
        "✓ second: 3000 cells, 2744 with age, train 2599 / test 145 (S s)",
        f"✗ truncated: step 2 (parquet_chunks): {batch_folder}/{truncated_problem.group(0)}",
        "",
        "Directories:",
        f"  Input:    {batch_folder}",
    ]
    # machine-readable summaries hold the same rows
    rows = list(csv.DictReader((root / "logs/batch_summary.tsv").open(), delimiter="\t"))
    assert [(r["dataset"], r["status"], r["cells_read"], r["train_cells"]) for r in rows] == [
        ("my_data_set", "SUCCESS", "3000", "2599"), ("no_x", "FAILED", "0", "0"),
        ("second", "SUCCESS", "3000", "2599"), ("truncated", "FAILED", "0", "0"),
    ]
    assert [r["status"] for r in json.loads((root / "logs/batch_summary.json").read_text())] == [
        "SUCCESS", "FAILED", "SUCCESS", "FAILED",
    ]
    # outputs for the good ones only, interim cleaned, inputs untouched
    output = root / "data/output"
    assert sorted(p.name for p in output.iterdir()) == ["my_data_set", "second"]
    assert pl.read_parquet(output / "second/test/chunks").height == 145
    for asset in ("parquet_chunks", "aged_chunks"):
        assert list((root / "data/interim" / asset).iterdir()) == []
    assert snapshot(batch_folder) == before
    # one log per dataset, with each step's figures, the cleanup and the failure cause
    events = [json.loads(line) for line in (root / "logs/second/pipeline.json").read_text().splitlines()]
    assert [(e["step"], e["event"]) for e in events] == [
        ("parquet_chunks", "start"), ("parquet_chunks", "end"), ("aged_chunks", "start"), ("aged_chunks", "end"),
        ("train_test_splits", "start"), ("train_test_splits", "end"), ("cleanup", "interim removed"),
        ("hf_upload", "start"), ("hf_upload", "end"),
    ]
    assert events[1]["figures"]["genes_mapped_hgnc"] == 1160 and events[3]["figures"]["cells_with_age"] == 2744
    assert set(events[0]) == {"time", "level", "dataset", "step", "event", "message", "figures"}
    failure = [json.loads(line) for line in (root / "logs/no_x/pipeline.json").read_text().splitlines()]
    assert failure[1]["level"] == "ERROR" and "has no count matrix" in failure[1]["message"]
    assert failure[2]["event"] == "partial interim removed after failure"
    assert "has no count matrix" in (root / "logs/no_x/pipeline.log").read_text()


def test_skip_existing_skips_only_up_to_date_datasets(batch_folder: Path, example_files) -> None:
    for bad in ("truncated.h5ad", "no_x.h5ad"):
        (batch_folder / bad).unlink()
    args = ["run-all", str(batch_folder), "--batch-mode", "--hgnc-file", str(example_files[1]), "--skip-existing"]
    assert invoke(*args).exit_code == 0
    again = invoke(*args)
    assert again.exit_code == 0
    assert "SKIPPED my_data_set: outputs up to date (same input file and parameters)" in again.output
    assert "Total: 2  Succeeded: 0  Failed: 0  Skipped: 2" in again.output
    os.utime(batch_folder / "second.H5AD", ns=(1, 1))  # a changed input is processed again
    changed = invoke(*args)
    assert "Total: 2  Succeeded: 1  Failed: 0  Skipped: 1" in changed.output
    assert "✓ second:" in changed.output
    new_parameters = invoke(*args, "--seed", "7")  # so are changed parameters
    assert "Total: 2  Succeeded: 2  Failed: 0  Skipped: 0" in new_parameters.output
    summaries = sorted((batch_folder.parent / "logs").glob("batch_summary-*.json"))
    assert len(summaries) == 4  # one per batch, none overwritten
    assert (batch_folder.parent / "logs/batch_summary.json").read_bytes() == summaries[-1].read_bytes()


def test_skip_existing_fails_a_dangling_symlink_in_one_line_and_goes_on(batch_folder: Path, example_files) -> None:
    for bad in ("truncated.h5ad", "no_x.h5ad", "second.H5AD"):
        (batch_folder / bad).unlink()
    (batch_folder / "gone.h5ad").symlink_to(batch_folder / "moved-away.h5ad")
    result = invoke("run-all", str(batch_folder), "--batch-mode", "--hgnc-file", str(example_files[1]), "--skip-existing")
    assert result.exit_code == 1
    problem = f"{batch_folder / 'gone.h5ad'}: is a symbolic link to {batch_folder / 'moved-away.h5ad'}, which does not exist"
    assert f"✗ gone: step 2 (parquet_chunks): {problem}" in result.output
    assert "Total: 2  Succeeded: 1  Failed: 1  Skipped: 0" in result.output
    assert "Traceback" not in result.output


def test_colliding_names_are_both_refused(batch_folder: Path, example_files) -> None:
    shutil.copy(batch_folder / "second.H5AD", batch_folder / "my_data_set.h5ad")
    result = invoke("run-all", str(batch_folder), "--batch-mode", "--hgnc-file", str(example_files[1]))
    assert result.exit_code == 1
    message = "dataset name 'my_data_set' is shared by my data@set.h5ad, my_data_set.h5ad; rename one"
    assert f"✗ my_data_set: {message}" in result.output
    assert result.output.count(message) == 4  # as each file is reached, and in the summary
    assert not (batch_folder.parent / "data/output/my_data_set").exists()


def test_step_commands_run_one_asset_each(batch_folder: Path, example_files) -> None:
    root = batch_folder.parent
    source = str(batch_folder / "second.H5AD")
    hgnc = ["--hgnc-file", str(example_files[1])]
    step3_first = invoke("step3-add-age", source)
    assert step3_first.exit_code == 1
    assert "parquet_chunks for dataset 'second' has not been materialized" in step3_first.output
    assert invoke("step1-hgnc-mapper", *hgnc).exit_code == 0
    assert invoke("step2-convert-h5ad", source, *hgnc).exit_code == 0
    assert (root / "data/interim/parquet_chunks/second/chunks/chunk_0000.parquet").exists()
    assert invoke("step3-add-age", source).exit_code == 0
    assert (root / "data/interim/aged_chunks/second/chunks/chunk_0000.parquet").exists()
    assert invoke("step4-train-test-split", source, "--keep-interim").exit_code == 0
    assert pl.read_parquet(root / "data/output/second/train/chunks").height == 2599
    assert (root / "data/interim/aged_chunks/second").exists()
    upload = invoke("step5-upload", source)
    assert upload.exit_code == 0 and "status=skipped" in upload.output


def test_upload_failure_marks_dataset_failed_and_never_leaks_the_token(batch_folder: Path, example_files, monkeypatch) -> None:
    """With no Hub reachable the upload fails; outputs stay, and the token appears nowhere."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    for bad in ("truncated.h5ad", "no_x.h5ad", "my data@set.h5ad"):
        (batch_folder / bad).unlink()
    result = invoke(
        "run-all", str(batch_folder), "--batch-mode", "--hgnc-file", str(example_files[1]),
        "--repo-id", "lab/cells", "--token", FAKE_TOKEN,
    )
    assert result.exit_code == 1
    assert "✗ second: step 5 (hf_upload):" in result.output
    root = batch_folder.parent
    assert pl.read_parquet(root / "data/output/second/train/chunks").height == 2599
    assert FAKE_TOKEN not in result.output
    written = [p for p in root.rglob("*") if p.is_file() and p.parent != batch_folder]
    assert any(p.name == "runs.db" or p.suffix == ".db" for p in written)
    assert all(FAKE_TOKEN.encode() not in p.read_bytes() for p in written)


def test_missing_token_with_repo_id_is_refused_up_front(batch_folder: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(batch_folder / "no_saved_login/token"))  # read at import, so patched
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(batch_folder / "no_saved_login/stored_tokens"))
    result = invoke("run-all", str(batch_folder), "--batch-mode", "--repo-id", "lab/cells")
    assert result.exit_code == 2
    assert "--repo-id needs a token: pass --token, set HF_TOKEN or run `hf auth login`" in result.output


def test_uploads_go_to_one_repo_per_dataset_in_batch_and_to_the_repo_itself_for_one_file(
    batch_folder: Path, example_files, hub
) -> None:
    from scrna_assets_tests.hub_server import TOKEN

    for bad in ("truncated.h5ad", "no_x.h5ad"):
        (batch_folder / bad).unlink()
    hgnc = ["--hgnc-file", str(example_files[1])]
    batch = invoke("run-all", str(batch_folder), "--batch-mode", *hgnc, "--repo-id", "lab/cells", "--token", TOKEN)
    assert batch.exit_code == 0, batch.output
    assert sorted(hub.repos) == [("dataset", "lab/cells-my_data_set"), ("dataset", "lab/cells-second")]
    repo = hub.repo("lab/cells-second")
    assert repo.private is True
    assert sorted(repo.files) == ["README.md", "test/chunks/chunk_0000.parquet", "train/chunks/chunk_0000.parquet"]
    assert "second.H5AD" in repo.files["README.md"].content.decode()
    record = json.loads((batch_folder.parent / "data/output/second/hf_upload.json").read_text())
    assert (record["status"], record["repo_id"]) == ("uploaded", "lab/cells-second")
    single = invoke("run-all", str(batch_folder / "second.H5AD"), *hgnc, "--repo-id", "lab/cells", "--public")
    assert single.exit_code == 0, single.output
    assert hub.repo("lab/cells").private is False
    # --skip-existing also requires the upload to that repository: "second" last went to lab/cells
    again = invoke("run-all", str(batch_folder), "--batch-mode", *hgnc, "--repo-id", "lab/cells", "--skip-existing")
    assert "Total: 2  Succeeded: 1  Failed: 0  Skipped: 1" in again.output
    assert "SKIPPED my_data_set:" in again.output


def test_a_token_saved_by_hf_auth_login_is_accepted_and_never_copied(batch_folder: Path, example_files, hub, monkeypatch) -> None:
    """No --token, no HF_TOKEN: the token file `hf auth login` writes in HF_HOME is what uploads."""
    from huggingface_hub import constants

    from scrna_assets_tests.hub_server import TOKEN

    home = batch_folder.parent / "hf_home"
    home.mkdir()
    (home / "token").write_text(TOKEN)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(home))  # what a dataset process reads when it loads huggingface_hub's settings
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))  # what this process read at import
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    result = invoke("run-all", str(batch_folder / "second.H5AD"), "--hgnc-file", str(example_files[1]), "--repo-id", "lab/cells")
    assert result.exit_code == 0, result.output
    assert sorted(hub.repo("lab/cells").files) == ["README.md", "test/chunks/chunk_0000.parquet", "train/chunks/chunk_0000.parquet"]
    written = [p for p in batch_folder.parent.rglob("*") if p.is_file() and p.parent != home]
    assert all(TOKEN.encode() not in p.read_bytes() for p in written)


def _run_windows(dagster_home: Path, names: list[str], monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """(start, end) of each dataset's Dagster run, from the instance the command used (its
    dagster.yaml names its folder as DAGSTER_HOME, as every Dagster process that reads it has it)."""
    from dagster import DagsterInstance, RunsFilter

    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        return [
            (record.start_time, record.end_time)
            for name in names
            for record in instance.get_run_records(RunsFilter(tags={"dagster/partition": name}))
        ]


@pytest.mark.parametrize(("chunk_size", "at_once"), [(10_000, True), (1_000, False)])
def test_two_workers_overlap_one_chunk_files_only_and_print_one_file_at_a_time(
    tmp_path: Path, example_files, monkeypatch: pytest.MonkeyPatch, chunk_size: int, at_once: bool
) -> None:
    """The real `preprocess --workers 2` (which forks its dataset processes from itself): the
    example (3,000 cells) is one chunk at the default size, so two datasets run at once (their
    Dagster runs overlap); at --chunk-size 1000 it is three chunks, which a dataset converts on
    both cores, so the runs follow one another. Either way each file's lines come out whole, in
    file order."""
    from scrna_assets.steps import BY_NUMBER

    names = ["a", "b", "c"]
    folder = tmp_path / "incoming"
    folder.mkdir()
    for name in names:
        shutil.copy(example_files[0], folder / f"{name}.h5ad")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SCRNA_", "DAGSTER_HOME", "HF_"))}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "preprocess"), "run-all", str(folder), "--batch-mode", "--hgnc-file", str(example_files[1]),
         "--workers", "2", "--chunk-size", str(chunk_size)],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    shown = [line for line in result.stdout.splitlines() if line.startswith(("PROCESSING FILE", "STEP ", "✓ Step", "Cleanup"))]
    expected = [f"STEP 1: {BY_NUMBER[1].title}", "✓ Step 1 complete"]
    for index, name in enumerate(names, start=1):
        expected.append(f"PROCESSING FILE {index}/3: {name}")
        for step in (2, 3, 4, 5):
            expected += [f"STEP {step}: {BY_NUMBER[step].title}", f"✓ Step {step} complete"]
            if step == 4:
                expected.append(f"Cleanup: interim chunks of {name} removed")
    assert shown == expected
    windows = _run_windows(tmp_path / ".dagster", names, monkeypatch)
    assert len(windows) == 3
    overlaps = [a_end > b_start for (_, a_end), (b_start, _) in zip(windows, windows[1:])]
    assert any(overlaps) if at_once else not any(overlaps), windows


def test_a_file_larger_than_one_chunk_waits_until_it_runs_alone(tmp_path: Path, example_files, monkeypatch: pytest.MonkeyPatch) -> None:
    """--workers 2 --chunk-size 1000 over a 1,000-cell file, the 3,000-cell example and another
    1,000-cell file: the example's process reads its size, waits until the first file's run has
    ended, and no run starts beside it."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    example = anndata.read_h5ad(example_files[0])
    for name in ("a_small", "c_small"):
        example[:1000].copy().write_h5ad(folder / f"{name}.h5ad")  # one chunk exactly
    shutil.copy(example_files[0], folder / "b_large.h5ad")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SCRNA_", "DAGSTER_HOME", "HF_"))}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "preprocess"), "run-all", str(folder), "--batch-mode", "--hgnc-file", str(example_files[1]),
         "--workers", "2", "--chunk-size", "1000"],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (a_start, a_end), (b_start, b_end), (c_start, c_end) = _run_windows(tmp_path / ".dagster", ["a_small", "b_large", "c_small"], monkeypatch)
    assert a_end <= b_start and b_end <= c_start, [(a_start, a_end), (b_start, b_end), (c_start, c_end)]

"""`preprocess` as a user runs it: banners, exit codes, one clear line for bad input."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from scrna_assets.cli import app


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder with DAGSTER_HOME unset, as on a fresh checkout."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("SCRNA_HGNC_FILE", raising=False)
    yield tmp_path
    os.environ.pop("DAGSTER_HOME", None)  # the CLI sets it for its own process


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_run_all_example(in_tmp: Path) -> None:
    result = invoke("run-all", "--example")
    assert result.exit_code == 0, result.output
    for step in range(1, 6):
        assert f"STEP {step}:" in result.output and f"✓ Step {step} complete" in result.output
    assert "cells=3000, chunks=1, genes_mapped_hgnc=1160, genes_fallback=39, genes_dropped=9, empty_sentences=48" in result.output
    assert "split_by=donor, train_cells=2599, test_cells=145" in result.output
    assert pl.read_parquet(in_tmp / "data/output/example_cellxgene/train/chunks").height == 2599
    assert not (in_tmp / "data/interim/parquet_chunks/example_cellxgene").exists()
    # the persistent instance in ./.dagster keeps the partition and the runs for `dagster dev`
    from dagster import AssetKey, DagsterEventType, DagsterInstance

    with DagsterInstance.from_config(str(in_tmp / ".dagster")) as instance:
        assert instance.get_dynamic_partitions("datasets") == ["example_cellxgene"]
        # one run for the unpartitioned HGNC step, then one run for the dataset's steps 2-5
        runs = instance.get_runs()
        assert [run.tags.get("dagster/partition") for run in reversed(runs)] == [None, "example_cellxgene"]
        materialized = instance.all_logs(runs[0].run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
        assert [event.dagster_event.asset_key for event in materialized] == [
            AssetKey(name) for name in ("parquet_chunks", "aged_chunks", "train_test_splits", "hf_upload")
        ]


def test_missing_file_is_one_line_exit_1(in_tmp: Path) -> None:
    result = CliRunner().invoke(app, ["run-all", "nothing.h5ad"])
    assert result.exit_code == 1
    assert result.output.strip() == f"✗ {in_tmp / 'data/input/nothing.h5ad'}: no such file"


def test_bad_input_fails_without_traceback(shared_data: Path, in_tmp: Path) -> None:
    path = shared_data / "h5ad" / "tiledbsoma_pbmc3k_processed_no_X.h5ad"
    result = CliRunner().invoke(app, ["run-all", str(path), "--offline"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    expected = f"✗ tiledbsoma_pbmc3k_processed_no_X: step 2 (parquet_chunks): {path}: has no count matrix"
    assert expected in result.output
    assert not (in_tmp / "data/output/tiledbsoma_pbmc3k_processed_no_X").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--test-size", "1.5"], "--test-size must be > 0 and < 1 (got 1.5)"),
        (["--chunk-size", "0"], "--chunk-size must be >= 1 (got 0)"),
        (["--top-genes", "-1", "--chunk-size", "0"], "--chunk-size must be >= 1 (got 0); --top-genes must be >= 0 (got -1)"),
        (["--repo-id", "me/data"], "--repo-id needs a token: pass --token, set HF_TOKEN or run `hf auth login`"),
    ],
)
def test_options_are_validated_up_front(in_tmp: Path, args: list[str], message: str, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(in_tmp / "no_saved_login/token"))  # read at import, so patched
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(in_tmp / "no_saved_login/stored_tokens"))
    result = CliRunner().invoke(app, ["run-all", "x.h5ad", *args])
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: {message}"
    assert not (in_tmp / ".dagster").exists()


@pytest.mark.parametrize(("option", "value", "allowed"), [
    ("--compression", "rar", "'zstd', 'snappy', 'gzip', 'brotli', 'lz4', 'none'"),
    ("--split-by", "tissue", "'auto', 'donor', 'cell'"),
    ("--tie-break", "alphabet", "'random', 'position'"),
])
def test_choices_are_refused_by_the_parser(in_tmp: Path, option: str, value: str, allowed: str) -> None:
    result = CliRunner().invoke(app, ["run-all", "x.h5ad", option, value], env={"COLUMNS": "400"})
    assert result.exit_code == 2
    assert f"Invalid value for '{option}' (env var: 'SCRNA_{option[2:].upper().replace('-', '_')}'): Value error, '{value}' is not one of {allowed}." in result.output
    assert not (in_tmp / ".dagster").exists()


def test_a_setting_from_its_variable_reaches_the_run(in_tmp: Path, example_files) -> None:
    """SCRNA_TOP_GENES, read by the CLI as by the code location, lands in the output's provenance."""
    import json

    result = CliRunner().invoke(app, ["run-all", "--example"], env={"SCRNA_TOP_GENES": "7", "SCRNA_SEED": "3"})
    assert result.exit_code == 0, result.output
    parameters = json.loads((in_tmp / "data/output/example_cellxgene/provenance.json").read_text())["parameters"]
    assert (parameters["top_genes"], parameters["seed"]) == (7, 3)


def test_register_refuses_collisions(in_tmp: Path) -> None:
    folder = in_tmp / "data" / "input"
    folder.mkdir(parents=True)
    for name in ("a b.h5ad", "a_b.h5ad", "good.h5ad"):
        (folder / name).write_bytes(b"")
    result = CliRunner().invoke(app, ["register"])
    assert result.exit_code == 1
    assert f"registered good <- {folder / 'good.h5ad'}" in result.output
    assert result.output.count("is shared by a b.h5ad, a_b.h5ad") == 2


def test_step_line_names_the_failed_checks(capsys: pytest.CaptureFixture[str]) -> None:
    from scrna_assets.cli import EchoReporter
    from scrna_assets.runner import StepResult

    figures = {"split_by": "donor", "train_cells": 8, "test_cells": 2, "seconds": 0.5}
    checks = {"chunk_files_readable": "PASSED", "no_donor_in_both_splits": "ERROR", "test_share_within_contract": "WARN"}
    EchoReporter().step(4, StepResult(4, "train_test_splits", True, figures=figures, checks=checks))
    assert capsys.readouterr().out.splitlines() == [
        "  split_by=donor, train_cells=8, test_cells=2",
        "  ✗ check no_donor_in_both_splits failed (ERROR)",
        "  ✗ check test_share_within_contract failed (WARN)",
        "✓ Step 4 complete",
    ]


def test_real_cellxgene_file_with_default_options_succeeds(shared_data: Path, in_tmp: Path) -> None:
    """The CellxGene 7.1 fixture (one donor, one stage) with default options: split by donor, the
    whole dataset in train, no donor on both sides, exit 0; its card loads with ``datasets``."""
    path = shared_data / "h5ad" / "cxg_schema7.1_small_perturbations_marson_cd4_perturbseq.h5ad"
    result = invoke("run-all", str(path), "--offline", "--hgnc-file", str(shared_data / "hgnc" / "hgnc_complete_set.parquet"))
    assert result.exit_code == 0, result.output
    assert "split_by=donor, train_cells=500, test_cells=0, test_share=0.0, train_donors=1, test_donors=0, donors_in_both=0" in result.output
    assert "✗ check" not in result.output
    name = "cxg_schema7.1_small_perturbations_marson_cd4_perturbseq"
    assert f"✓ {name}: 500 cells, 500 with age, train 500 / test 0" in result.output
    card = (in_tmp / "data/output" / name / "README.md").read_text()
    assert "license: other" in card and "| Organism(s) | Homo sapiens |" in card
    assert f"\n# {name}\n" in card and f'load_dataset("data/output/{name}")' in card and ".staging" not in card
    assert "| CELLxGENE schema version | 7.1.0 |" in card
    assert "- Matrix: `X` (csr, float32), which held integer values (counts)." in card
    import datasets

    loaded = datasets.load_dataset(str(in_tmp / "data/output" / name), cache_dir=str(in_tmp / "hf-cache"))
    assert {split: part.num_rows for split, part in loaded.items()} == {"train": 500}
    assert set(loaded["train"]["age"]) == {23.0} and set(loaded["train"]["age_max"]) == {24.0}


# --- A full disk, end to end: the real console script in a private mount namespace -------------

MARK = "@@ files left on the tmpfs @@"


def run_cli_on_small_tmpfs(root: Path, folder: Path, size_kib: int, *args: str) -> tuple[int, str, str, list[str]]:
    """Run ``preprocess *args`` in ``root`` (fresh environment) with a ``size_kib`` KiB tmpfs on
    ``folder``: its exit code, stdout, stderr, and what it left on the tmpfs (sorted paths
    relative to ``folder``, folders included). The tmpfs vanishes with the namespace, so the list
    is taken inside it by the same shell, right after the CLI has exited."""
    from scrna_assets_tests.disk_full import SKIP_REASON, disk_full_supported, run_on_small_tmpfs

    if not disk_full_supported():
        pytest.skip(SKIP_REASON)
    import sys

    folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRNA_", "DAGSTER_HOME", "HF_"))}
    script = f'"$@"; code=$?; printf "\\n%s\\n" "{MARK}"; cd "$0" && find . -mindepth 1; exit $code'
    command = ["sh", "-c", script, str(folder), str(Path(sys.executable).parent / "preprocess"), *args]
    done = run_on_small_tmpfs(folder, size_kib, command, cwd=root, env=env, timeout=600)
    stdout, mark, listing = done.stdout.rpartition(MARK)
    assert mark, f"the shell never listed the tmpfs ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    left = sorted(line.removeprefix("./") for line in listing.splitlines() if line.strip())
    return done.returncode, stdout, done.stderr, left


def no_partial_files(paths: list[str]) -> list[str]:
    """Temporary files and staging folders: a failed write must leave none of them."""
    return [p for p in paths if p.endswith(".tmp") or any(part.startswith(".staging-") for part in p.split("/"))]


def partial_files_on_disk(root: Path) -> list[str]:
    return no_partial_files([str(p.relative_to(root)) for p in root.rglob("*")])


def test_log_folder_full_at_the_summary_exits_1_with_one_line(tmp_path: Path) -> None:
    """8 KiB = two tmpfs pages: the dataset's pipeline.json (~2.8 KB) and pipeline.log (~1.9 KB)
    take one page each, so all five steps succeed and the disk is full exactly when the batch
    summary is written at the end of the run (4 KiB fails earlier, in step 2; see the next test).
    The summary's files go away again (its reserved name too): only the dataset's logs are left."""
    logs = tmp_path / "logs"
    code, stdout, stderr, left = run_cli_on_small_tmpfs(tmp_path, logs, 8, "run-all", "--example")
    output = stdout + stderr
    assert code == 1, output
    assert "Traceback" not in output
    assert stderr.splitlines() == [f"✗ The batch summary was not written: no space left in {logs} (the disk or quota is full)"]
    assert output.count("no space left") == 1  # one message, naming the full folder
    assert "✓ example_cellxgene: 3000 cells, 2744 with age, train 2599 / test 145 (" in stdout
    assert "Summary: " not in stdout
    assert left == ["example_cellxgene", "example_cellxgene/pipeline.json", "example_cellxgene/pipeline.log"]
    assert partial_files_on_disk(tmp_path) == []
    assert (tmp_path / "data/output/example_cellxgene/train/chunks").is_dir()  # the dataset itself was published


def test_log_folder_full_during_a_step_fails_the_dataset_naming_the_folder(tmp_path: Path) -> None:
    """4 KiB = one tmpfs page: step 2's first log line takes it (pipeline.json), so its second one
    (pipeline.log, created then removed again) hits ENOSPC while step 2 runs; the dataset fails,
    naming its log folder, and the summary cannot be written either."""
    logs = tmp_path / "logs"
    code, stdout, stderr, left = run_cli_on_small_tmpfs(tmp_path, logs, 4, "run-all", "--example")
    output = stdout + stderr
    assert code == 1, output
    assert "Traceback" not in output and "internal error" not in output, output
    full = f"no space left in {logs / 'example_cellxgene'} (the disk or quota is full)"
    assert f"✗ Step 2 failed: example_cellxgene: parquet_chunks: {full}" in stdout.splitlines()
    assert f"✗ example_cellxgene: step 2 (parquet_chunks): example_cellxgene: parquet_chunks: {full}" in stdout.splitlines()
    assert stderr.splitlines() == [f"✗ The batch summary was not written: no space left in {logs} (the disk or quota is full)"]
    assert no_partial_files(left) == [] and "example_cellxgene/pipeline.log" not in left
    assert partial_files_on_disk(tmp_path) == []
    assert not (tmp_path / "data/output/example_cellxgene").exists()
    assert not (tmp_path / "data/interim/parquet_chunks/example_cellxgene").exists()


def test_interim_folder_full_during_conversion_fails_the_dataset_naming_the_folder(tmp_path: Path) -> None:
    """256 KiB: the lock and the HGNC mapping take a page each, the first of six ~150 KB chunk
    files (500 cells each) fits, the second does not: the disk fills in the middle of step 2."""
    interim = tmp_path / "data/interim"
    code, stdout, stderr, left = run_cli_on_small_tmpfs(tmp_path, interim, 256, "run-all", "--example", "--chunk-size", "500")
    output = stdout + stderr
    assert code == 1, output
    assert "Traceback" not in output and "internal error" not in output, output
    import re

    line = next((l for l in stdout.splitlines() if l.startswith("✗ example_cellxgene: ")), "")
    pattern = rf"✗ example_cellxgene: step 2 \(parquet_chunks\): example_cellxgene: parquet_chunks: no space left in {re.escape(str(interim))}(/\S+)? \(the disk or quota is full\)"
    assert re.fullmatch(pattern, line), output
    assert no_partial_files(left) == [], left
    assert not [p for p in left if p.startswith(("parquet_chunks/", "aged_chunks/"))], left  # nothing of the dataset's chunks
    assert partial_files_on_disk(tmp_path) == []
    assert not (tmp_path / "data/output/example_cellxgene").exists()


def test_step_one_warnings_reach_the_console_and_the_summary(in_tmp: Path, example_files) -> None:
    """--offline and no HGNC table: the mapping is empty, which step 1 says, and the summary repeats."""
    result = CliRunner().invoke(app, ["run-all", str(example_files[0]), "--offline"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    warning = next(line for line in lines if line.startswith("  ! No HGNC table (offline mode)"))
    summary = lines[lines.index("Warnings:") + 1]
    assert summary == f"  ! step 1 (hgnc_mapper): {warning[4:]}"
    load = lines[lines.index("Load example_cellxgene:") + 1:]
    assert load[:2] == [
        f"  datasets.load_dataset('{in_tmp / 'data/output/example_cellxgene'}')",
        f"  polars.read_parquet('{in_tmp / 'data/output/example_cellxgene/**/*.parquet'}')",
    ]


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_elsewhere(in_tmp: Path) -> None:
    """The real `preprocess`, once on a pseudo-terminal (Rich's bar: cells done/total, cells/s) and
    once into a pipe (one plain final line per step)."""
    import pty
    import subprocess
    import sys

    command = [str(Path(sys.executable).parent / "preprocess"), "run-all", "--example", "--chunk-size", "1000"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRNA_", "DAGSTER_HOME", "HF_"))} | {"COLUMNS": "120"}
    primary, secondary = pty.openpty()
    process = subprocess.Popen(command, cwd=in_tmp, env=env, stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary)
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    assert process.wait(timeout=300) == 0
    terminal = b"".join(chunks).decode(errors="replace")
    assert "3,000/3,000" in terminal and "cells/s" in terminal and "step 2: parquet_chunks" not in terminal
    assert "\x1b[" in terminal  # drawn with terminal control sequences

    piped = subprocess.run(command, cwd=in_tmp / "data", env=env, capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0, piped.stderr
    finals = [line[: line.index(")") + 1] for line in piped.stdout.splitlines() if line.startswith("  step ")]
    assert finals == ["  step 2: 3,000/3,000 cells (100 %)", "  step 3: 3,000/3,000 cells (100 %)", "  step 4: 3,000/3,000 cells (100 %)"]
    assert "\x1b[" not in piped.stdout


def test_a_bad_variable_is_a_usage_error_and_an_option_overrides_it(in_tmp: Path) -> None:
    refused = CliRunner().invoke(app, ["run-all", "x.h5ad"], env={"SCRNA_CHUNK_SIZE": "0"})
    assert (refused.exit_code, refused.output.strip()) == (2, "Error: SCRNA_CHUNK_SIZE must be >= 1 (got '0')")
    example = CliRunner().invoke(app, ["run-all", "--example", "--chunk-size", "0"])
    assert (example.exit_code, example.output.strip()) == (2, "Error: --chunk-size must be >= 1 (got 0)")
    overridden = CliRunner().invoke(app, ["run-all", "nothing.h5ad", "--chunk-size", "100"], env={"SCRNA_CHUNK_SIZE": "0"})
    assert overridden.exit_code == 1 and "no such file" in overridden.output  # got past the settings

"""The code location from the shell, as users run it: `dagster definitions validate`,
`dagster asset materialize --partition` and `dagster job execute --tags`, as real subprocesses
against a persistent DAGSTER_HOME."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from dagster import DagsterInstance, DagsterRunStatus

from scrna_assets.definitions import defs

BIN = Path(sys.executable).parent
EXAMPLE = "example_cellxgene"


def test_definitions_hold_five_assets_and_two_jobs() -> None:
    keys = sorted(key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys())
    assert keys == ["aged_chunks", "hf_upload", "hgnc_mapper", "parquet_chunks", "train_test_splits"]
    assert defs.resolve_job_def("dataset_job").partitions_def.name == "datasets"
    assert defs.resolve_job_def("hgnc_job") is not None


def test_every_asset_has_kinds_and_a_code_version() -> None:
    """The kinds (UI icons) and hand-bumped code versions (staleness) of each asset spec."""
    specs = {spec.key.to_user_string(): (spec.kinds, spec.code_version) for spec in defs.resolve_all_asset_specs()}
    assert specs == {
        "hgnc_mapper": ({"polars", "parquet"}, "1"),
        "parquet_chunks": ({"parquet"}, "1"),
        "aged_chunks": ({"parquet"}, "1"),
        "train_test_splits": ({"parquet"}, "1"),
        "hf_upload": ({"huggingface"}, "1"),
    }


def test_package_import_is_light_and_defs_load_on_access() -> None:
    """`import scrna_assets.core...` (the CLI's and the kernels' path) loads no Dagster; the
    package still hands out `defs` (for `-m scrna_assets`: Dagster lists members with dir())."""
    code = (
        "import sys, scrna_assets, scrna_assets.core.convert; assert 'dagster' not in sys.modules; "
        "assert 'defs' in dir(scrna_assets); from scrna_assets import defs; "
        "from scrna_assets.definitions import defs as same; assert defs is same and scrna_assets.defs is same"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


@pytest.fixture
def project(tmp_path: Path, example_files) -> dict[str, str]:
    """A project folder with the example in data/input and an environment for the dagster CLI."""
    h5ad, hgnc = example_files
    (tmp_path / "data" / "input").mkdir(parents=True)
    shutil.copy(h5ad, tmp_path / "data" / "input" / h5ad.name)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRNA_")}
    env.update(DAGSTER_HOME=str(home), SCRNA_HOME=str(tmp_path), SCRNA_HGNC_FILE=str(hgnc), SCRNA_OFFLINE="1")
    return env


def dagster(env: dict[str, str], *args: str, tool: str = "dagster") -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / tool), *args], env=env, cwd=env["SCRNA_HOME"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_shell_commands_materialize_a_registered_partition(project: dict[str, str]) -> None:
    root = Path(project["SCRNA_HOME"])
    dagster(project, "definitions", "validate", "-m", "scrna_assets")
    registered = dagster(project, "register", tool="preprocess")
    assert registered.stdout.strip() == f"registered {EXAMPLE} <- {root / 'data/input' / (EXAMPLE + '.h5ad')}"
    dagster(project, "asset", "materialize", "-m", "scrna_assets", "--select", "hgnc_mapper")
    dagster(project, "asset", "materialize", "-m", "scrna_assets", "--select", "parquet_chunks", "--partition", EXAMPLE)
    assert (root / "data/interim/parquet_chunks" / EXAMPLE / "chunks/chunk_0000.parquet").exists()
    dagster(project, "job", "execute", "-m", "scrna_assets", "-j", "dataset_job", "--tags", f'{{"dagster/partition": "{EXAMPLE}"}}')
    assert pl.read_parquet(root / "data/output" / EXAMPLE / "train/chunks").height == 2599
    assert pl.read_parquet(root / "data/output" / EXAMPLE / "test/chunks").height == 145
    with DagsterInstance.from_config(project["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
        assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS] * 3
        assert runs[0].tags["dagster/partition"] == EXAMPLE

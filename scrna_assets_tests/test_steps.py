"""The step table is the one list of steps: the definitions, jobs, layout and CLI agree with it."""

from __future__ import annotations

from typer.main import get_command

from scrna_assets.cli import app
from scrna_assets.assets import ALL_ASSETS
from scrna_assets.definitions import defs
from scrna_assets.layout import DatasetLayout
from scrna_assets.steps import INTERIM_ASSETS, OUTPUT_ASSET, PARTITIONED_ASSETS, STEPS


def test_the_definitions_hold_the_table_s_assets_in_its_order() -> None:
    assert [a.key.path[-1] for a in ALL_ASSETS] == [step.asset for step in STEPS]
    assert [step.number for step in STEPS] == [1, 2, 3, 4, 5]


def test_the_dataset_job_selects_the_partitioned_steps() -> None:
    job = defs.resolve_job_def("dataset_job")
    assert sorted(key.path[-1] for key in job.asset_layer.executable_asset_keys) == sorted(PARTITIONED_ASSETS)
    assert PARTITIONED_ASSETS == ("parquet_chunks", "aged_chunks", "train_test_splits", "hf_upload")


def test_the_layout_puts_each_step_where_the_table_says(tmp_path) -> None:
    layout = DatasetLayout(tmp_path / "interim", tmp_path / "output", tmp_path / "logs")
    assert INTERIM_ASSETS == ("parquet_chunks", "aged_chunks") and OUTPUT_ASSET == "train_test_splits"
    for step in STEPS:
        if step.partitioned and step.writes != "hub":
            root = tmp_path / step.writes
            assert layout.asset_dir(step.asset, "d").is_relative_to(root), step.asset


def test_the_cli_has_one_command_per_step_with_its_title() -> None:
    commands = get_command(app).commands
    for step in STEPS:
        assert step.command in commands
        assert commands[step.command].help == f"Step {step.number} only: materialize {step.asset} ({step.title.lower()})."

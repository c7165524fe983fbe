"""Each setting declared once: every field reaches the CLI's --help, the environment loader, the
Dagster resource and (when it changes outputs) the provenance, with one precedence everywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scrna_assets.cli import app
from scrna_assets.resources import PipelineSettings
from scrna_assets.settings import CONVERSION, SPLIT, Settings, SettingsError, env_name, option_name, role

# A value other than the default for each field, as an environment variable would hold it.
OTHER_VALUES = {
    "input_dir": "in", "interim_dir": "mid", "output_dir": "out", "log_dir": "journal", "chunk_size": "7", "top_genes": "9",
    "compression": "lz4", "interim_compression": "zstd", "matrix": "X", "tie_break": "position", "seed": "3", "test_size": "0.25", "split_by": "cell",
    "include_age_ranges": "true", "primary_only": "1", "skip_train_test_split": "yes", "license": "cc0-1.0",
    "hgnc_file": "hgnc.tsv", "offline": "true", "keep_interim": "true", "repo_id": "lab/cells", "private": "false",
    "repo_per_dataset": "true", "sensor_interval": "5", "sensor_settle_seconds": "2.5", "min_age_share": "0.9", "max_empty_share": "0.2",
    "workers": "3",
}
OUTPUT_AFFECTING = {
    CONVERSION: {"chunk_size", "top_genes", "matrix", "tie_break", "seed"},
    SPLIT: {"compression", "seed", "test_size", "split_by", "include_age_ranges", "primary_only", "skip_train_test_split", "license"},
}


def test_every_setting_has_a_test_value() -> None:
    assert set(OTHER_VALUES) == set(Settings.model_fields)


def test_every_setting_loads_from_its_variable_and_differs_from_its_default(tmp_path: Path) -> None:
    environ = {env_name(name): text for name, text in OTHER_VALUES.items()} | {"SCRNA_HOME": str(tmp_path)}
    loaded = Settings.load(environ=environ)
    for name, field in Settings.model_fields.items():
        assert getattr(loaded, name) != field.default, name
    assert (loaded.input_dir, loaded.log_dir, loaded.hgnc_file) == (str(tmp_path / "in"), str(tmp_path / "journal"), str(tmp_path / "hgnc.tsv"))
    assert (loaded.chunk_size, loaded.test_size, loaded.private, loaded.sensor_settle_seconds) == (7, 0.25, False, 2.5)


def test_every_option_setting_is_in_help_with_its_variable_and_the_others_are_not() -> None:
    help_text = " ".join(CliRunner().invoke(app, ["run-all", "--help"], env={"COLUMNS": "400"}).output.split())
    for name in Settings.model_fields:
        shown = option_name(name) in help_text and env_name(name) in help_text
        assert shown == role(name).option, name
    assert "--private --public <bool> Create repositories private (--public: public). [env var: SCRNA_PRIVATE]" in help_text
    assert "<zstd|snappy|gzip|brotli|lz4|none>" in help_text  # choices come from the type


def test_provenance_records_exactly_the_settings_that_change_outputs() -> None:
    settings = Settings()
    assert {step: set(settings.parameters(step)) for step in OUTPUT_AFFECTING} == OUTPUT_AFFECTING
    roots_and_secrets = {"input_dir", "interim_dir", "output_dir", "log_dir", "repo_id", "hgnc_file", "sensor_interval", "workers", "interim_compression"}
    assert not roots_and_secrets & {name for step in OUTPUT_AFFECTING for name in settings.parameters(step)}


def test_option_beats_variable_beats_default(tmp_path: Path) -> None:
    environ = {"SCRNA_TOP_GENES": "9", "SCRNA_CHUNK_SIZE": "7", "SCRNA_HOME": str(tmp_path), "SCRNA_OUTPUT_DIR": "out"}
    loaded = Settings.load({"top_genes": 5, "input_dir": "given"}, environ)
    assert (loaded.top_genes, loaded.chunk_size, loaded.seed) == (5, 7, 42)
    assert loaded.input_dir == str(Path("given").resolve())  # typed on the command line: relative to the current folder
    assert loaded.output_dir == str(tmp_path / "out")  # from a variable: relative to SCRNA_HOME
    assert loaded.interim_dir == str(tmp_path / "data/interim")  # default: under SCRNA_HOME


def test_every_invalid_value_is_named_with_where_it_came_from() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.load({"chunk_size": 0, "test_size": 1.5}, {"SCRNA_TOP_GENES": "-1", "SCRNA_COMPRESSION": "rar", "SCRNA_OFFLINE": "maybe"})
    assert refused.value.problems == [
        "--chunk-size must be >= 1 (got 0)",
        "SCRNA_TOP_GENES must be >= 0 (got '-1')",
        "SCRNA_COMPRESSION must be one of zstd, snappy, gzip, brotli, lz4, none (got 'rar')",
        "--test-size must be > 0 and < 1 (got 1.5)",
        "SCRNA_OFFLINE input should be a valid boolean, unable to interpret input (got 'maybe')",
    ]


def test_the_dagster_resource_has_every_setting_and_gives_the_model_back(tmp_path: Path) -> None:
    assert set(PipelineSettings.model_fields) == set(Settings.model_fields)
    settings = Settings.load({"top_genes": 5, "compression": "lz4"}, {"SCRNA_HOME": str(tmp_path)})
    assert PipelineSettings.of(settings).model() == settings


def test_the_code_location_reads_the_variables_the_cli_reads(tmp_path: Path) -> None:
    """definitions.defs built in a fresh process with SCRNA_* set: its resource holds those values."""
    script = "from scrna_assets.definitions import defs; r = defs.resources['settings']; print(r.top_genes, r.sensor_settle_seconds, r.input_dir)"
    env = {"PATH": "/usr/bin:/bin", "SCRNA_HOME": str(tmp_path), "SCRNA_TOP_GENES": "9", "SCRNA_SENSOR_SETTLE_SECONDS": "2.5",
           "SCRNA_INPUT_DIR": "in", "DAGSTER_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["9", "2.5", str(tmp_path / "in")]


def test_importing_the_cli_imports_no_heavy_library() -> None:
    script = ("import sys, scrna_assets.cli; "
              "print(sorted(m for m in ('dagster', 'numba', 'anndata', 'pyarrow', 'polars', 'huggingface_hub') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_empty_folder_variable_means_the_default(tmp_path: Path) -> None:
    loaded = Settings.load(environ={"SCRNA_OUTPUT_DIR": "", "SCRNA_HGNC_FILE": "", "SCRNA_REPO_ID": "", "SCRNA_HOME": str(tmp_path)})
    assert (loaded.output_dir, loaded.hgnc_file, loaded.repo_id) == (str(tmp_path / "data/output"), None, None)

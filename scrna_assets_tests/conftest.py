"""Shared fixtures: the read-only data in ../shared (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def example_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The example h5ad and its mini HGNC table, written once per test session."""
    from scrna_assets.core.example import write_example

    return write_example(tmp_path_factory.mktemp("example"))


@pytest.fixture
def make_settings(tmp_path: Path):
    """PipelineSettings with every root under tmp_path; keyword arguments override."""
    from scrna_assets.resources import PipelineSettings

    def make(**overrides: object) -> PipelineSettings:
        values: dict[str, object] = {
            "input_dir": str(tmp_path / "data" / "input"),
            "interim_dir": str(tmp_path / "data" / "interim"),
            "output_dir": str(tmp_path / "data" / "output"),
            "log_dir": str(tmp_path / "logs"),
            "offline": True,
        }
        values.update(overrides)
        return PipelineSettings(**values)

    return make


@pytest.fixture
def instance(tmp_path: Path):
    """A real on-disk (SQLite) Dagster instance, private to the test."""
    from dagster import DagsterInstance

    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.local_temp(str(home), overrides={"telemetry": {"enabled": False}}) as dagster_instance:
        yield dagster_instance


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    """A running local Hub on 127.0.0.1 that the real huggingface_hub client talks to (token from
    HF_TOKEN); stopped after the test, which fails if the client used an endpoint it lacks."""
    from huggingface_hub.utils import close_session

    from scrna_assets_tests.hub_server import TOKEN, LocalHub, hub_client_env

    server = LocalHub().start()
    hub_client_env(monkeypatch, server.url, TOKEN)
    try:
        yield server
    finally:
        server.stop()
        close_session()
    assert server.unhandled == [], f"the client called endpoints the local hub lacks: {server.unhandled}"

"""End to end with real processes: `dagster dev` (webserver + daemon) on 127.0.0.1, a file dropped
into the watched folder, the sensor's run followed through GraphQL, then a partition launched
through GraphQL the way the UI does. Every process started is stopped by its pid."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

BIN = Path(sys.executable).parent
EXAMPLE = "example_cellxgene"
PARTITIONED = ["parquet_chunks", "aged_chunks", "train_test_splits", "hf_upload"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Dagit:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, text: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": text, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.loads(response.read())
        assert "errors" not in payload, payload
        return payload["data"]

    def runs(self, partition: str) -> list[dict]:
        data = self.query(
            """query($value: String!) { runsOrError(filter: {tags: [{key: "dagster/partition", value: $value}]}) {
                 ... on Runs { results { runId status jobName tags { key value } } } } }""",
            {"value": partition},
        )
        return data["runsOrError"]["results"]

    def wait_for(self, predicate, what: str, timeout: float = 240.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(2)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def dagster_dev(tmp_path: Path, example_files) -> Iterator[tuple[Dagit, Path, subprocess.Popen]]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (tmp_path / "data" / "input").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRNA_", "HF_"))}
    env.update(
        DAGSTER_HOME=str(home), SCRNA_HOME=str(tmp_path), SCRNA_HGNC_FILE=str(example_files[1]),
        SCRNA_OFFLINE="1", SCRNA_SENSOR_INTERVAL="2", SCRNA_SENSOR_SETTLE_SECONDS="1",
    )
    port = free_port()
    log = open(tmp_path / "dagster_dev.log", "wb")
    process = subprocess.Popen(
        [str(BIN / "dagster"), "dev", "-m", "scrna_assets", "-h", "127.0.0.1", "-p", str(port)],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    dagit = Dagit(f"http://127.0.0.1:{port}")
    try:
        def up() -> bool:
            assert process.poll() is None, (tmp_path / "dagster_dev.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{dagit.url}/server_info", timeout=5) as response:
                    return response.status == 200
            except (urllib.error.URLError, ConnectionError):
                return False

        dagit.wait_for(up, "the webserver", timeout=180)
        yield dagit, tmp_path, process
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the group led by the pid we started
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        log.close()
        assert process.returncode is not None


def test_drop_a_file_and_launch_a_partition_like_the_ui(dagster_dev, example_files) -> None:
    dagit, root, _ = dagster_dev
    nodes = dagit.query("{ assetNodes { assetKey { path } dependencyKeys { path } } }")["assetNodes"]
    lineage = {n["assetKey"]["path"][0]: sorted(d["path"][0] for d in n["dependencyKeys"]) for n in nodes}
    assert lineage == {
        "hgnc_mapper": [], "parquet_chunks": ["hgnc_mapper"], "aged_chunks": ["parquet_chunks"],
        "train_test_splits": ["aged_chunks", "parquet_chunks"], "hf_upload": ["train_test_splits"],
    }

    shutil.copy(example_files[0], root / "data" / "input" / f"{EXAMPLE}.h5ad")  # the drop
    def sensor_run_done() -> dict | None:
        runs = dagit.runs(EXAMPLE)
        assert all(r["status"] not in ("FAILURE", "CANCELED") for r in runs), runs
        return next((r for r in runs if r["status"] == "SUCCESS"), None)

    run = dagit.wait_for(sensor_run_done, "the sensor's partition run")
    assert run["jobName"] == "dataset_job"
    assert {t["key"]: t["value"] for t in run["tags"]}["scrna_assets/source"] == "sensor"
    output = root / "data" / "output" / EXAMPLE
    assert pl.read_parquet(output / "train" / "chunks").height == 2599
    partitions = dagit.query('{ assetNodeOrError(assetKey: {path: ["parquet_chunks"]}) { ... on AssetNode { partitionKeys } } }')
    assert partitions["assetNodeOrError"]["partitionKeys"] == [EXAMPLE]

    launched = dagit.query(
        """mutation($params: ExecutionParams!) { launchPipelineExecution(executionParams: $params) {
             __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
        {"params": {
            "selector": {"repositoryLocationName": "scrna_assets", "repositoryName": "__repository__",
                         "pipelineName": "__ASSET_JOB", "assetSelection": [{"path": [a]} for a in PARTITIONED]},
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": EXAMPLE}]},
        }},
    )["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    def ui_run_done() -> bool:
        status = next(r["status"] for r in dagit.runs(EXAMPLE) if r["runId"] == run_id)
        assert status not in ("FAILURE", "CANCELED"), status
        return status == "SUCCESS"

    dagit.wait_for(ui_run_done, "the partition launched through GraphQL")
    checks = dagit.query(
        """{ assetNodeOrError(assetKey: {path: ["train_test_splits"]}) { ... on AssetNode {
             assetChecksOrError { ... on AssetChecks { checks { name executionForLatestMaterialization { status } } } } } } }"""
    )["assetNodeOrError"]["assetChecksOrError"]["checks"]
    assert sorted((c["name"], c["executionForLatestMaterialization"]["status"]) for c in checks) == [
        ("chunk_files_readable", "SUCCEEDED"), ("empty_sentence_share", "SUCCEEDED"),
        ("no_donor_in_both_splits", "SUCCEEDED"), ("share_of_cells_with_age", "SUCCEEDED"),
        ("test_share_within_contract", "SUCCEEDED"),
    ]

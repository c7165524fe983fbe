"""Production on one host, for real, and the cluster files, as far as they can be checked here.

A PostgreSQL server on 127.0.0.1 (initdb in a temp folder, as the `postgres` OS user when we are
root), then the three services of deploy/systemd/ started with the command lines of their unit
files, deploy/dagster.yaml as the instance and deploy/scrna-assets.env as the environment: the
code server, the daemon with the run queue (2 at once, 1 per dataset) and the webserver. Four
datasets are registered with `preprocess register`, hgnc_mapper is materialized, four runs of
dataset_job go into the queue through GraphQL (the way the UI launches them) and a fifth, a dataset
again, through `dagster job launch`. Without a Docker engine or a cluster, the image and the Helm
values are checked as files, and the run pod is built by dagster-k8s from the values.
Every process started here is stopped by its pid (process group), PostgreSQL by `pg_ctl stop`.
"""

from __future__ import annotations

import configparser
import glob
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
UNIT_NAMES = ("code-server", "daemon", "webserver")
INSTALLED_BIN = "/opt/scrna-assets/.venv/bin/"
INSTALLED_WORKSPACE = "/etc/scrna-assets/workspace.yaml"
JOB = "dataset_job"
LOCATION = "scrna_assets"
MAX_CONCURRENT = 2
# Four datasets of different sizes, so that rows crossing from one dataset to another would show.
DATASETS = {"donors_a": 1800, "donors_b": 2400, "donors_c": 3000, "donors_d": 1200}
TWICE = "donors_c"  # submitted twice: the second run must wait for the first


# -- processes ------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


@dataclass
class Service:
    """One long-running process in a session (process group) of its own, logging to a file."""

    name: str
    command: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    process: subprocess.Popen | None = None

    def start(self) -> Service:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        return self

    def check_running(self) -> None:
        assert self.process is not None and self.process.poll() is None, (
            f"{self.name} exited with {self.process.returncode}:\n{self.tail()}"
        )

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> list[int]:
        """SIGTERM to the group we created, wait, SIGKILL what is left; returns pids that survived
        a SIGTERM (for the report), and fails if anything survives the SIGKILL."""
        if self.process is None:
            return []
        pgid = self.process.pid  # start_new_session: the group is led by the pid we started
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (self.process.poll() is None or group_members(pgid)):
            time.sleep(0.2)
        stubborn = group_members(pgid)
        if self.process.poll() is None or stubborn:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=30)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and group_members(pgid):
                time.sleep(0.2)
        assert self.process.returncode is not None
        assert not group_members(pgid), f"{self.name}: processes {group_members(pgid)} outlived SIGKILL"
        return stubborn


# -- PostgreSQL -----------------------------------------------------------------------------------

def postgres_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin (Debian's layout), else initdb on PATH."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class LocalPostgres:
    """A throwaway server: trust authentication, 127.0.0.1 and a free port only, data and socket in
    a fresh temp folder. Run as the `postgres` OS user when we are root (PostgreSQL refuses root)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="scrna-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.pid: int | None = None
        self.user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam("postgres")
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess:
        as_user = {} if self.user is None else {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(self.root)}
        result = subprocess.run(
            [str(self.bin_dir / program), *args], cwd=self.root, env=env, capture_output=True, text=True,
            timeout=120, stdin=subprocess.DEVNULL, **as_user,
        )
        return result

    def start(self) -> LocalPostgres:
        initdb = self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
        assert initdb.returncode == 0, initdb.stdout + initdb.stderr
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        started = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options, "start")
        assert started.returncode == 0, started.stdout + started.stderr + self._log_tail()
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        return self

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def connect(self, dbname: str = "postgres"):
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname)

    def create_database(self, name: str) -> str:
        connection = self.connect()
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()
        return name

    def query(self, dbname: str, sql: str, *params: object) -> list[tuple]:
        connection = self.connect(dbname)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()
        finally:
            connection.close()

    def stop(self) -> None:
        if self.pid is not None:
            stopped = self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
            deadline = time.monotonic() + 30
            while alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if alive(self.pid):
                os.kill(self.pid, signal.SIGKILL)
            assert not alive(self.pid), f"postgres {self.pid} still running: {stopped.stdout}{stopped.stderr}"
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres() -> Iterator[LocalPostgres]:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        reason = ("PostgreSQL server binaries are absent (no /usr/lib/postgresql/*/bin/initdb, no initdb on PATH): "
                  "`apt-get install postgresql`, as .ci/run does")
        if os.environ.get("CI"):
            pytest.fail(reason)  # .ci/run installs them: in CI their absence is an error
        pytest.skip(reason)
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` OS user to run PostgreSQL as")
    server = LocalPostgres(bin_dir)
    try:
        yield server.start()
    finally:
        server.stop()


# -- the production environment ---------------------------------------------------------------------

def env_file() -> dict[str, str]:
    """deploy/scrna-assets.env as systemd's EnvironmentFile= reads it (KEY=VALUE, # comments)."""
    values = {}
    for line in (DEPLOY / "scrna-assets.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def production_env(pg: LocalPostgres, database: str, dagster_home: Path, scrna_home: Path, hgnc_file: Path) -> dict[str, str]:
    """The environment file of deploy/, pointed at this test's server and folders."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRNA_", "HF_", "DAGSTER_"))}
    env.update(env_file())
    env.update(
        DAGSTER_HOME=str(dagster_home), DAGSTER_PG_HOST="127.0.0.1", DAGSTER_PG_PORT=str(pg.port),
        DAGSTER_PG_DB=database, DAGSTER_PG_USERNAME="postgres", DAGSTER_PG_PASSWORD="",
        SCRNA_HOME=str(scrna_home), SCRNA_HGNC_FILE=str(hgnc_file), SCRNA_OFFLINE="1",
    )
    return env


def make_dagster_home(folder: Path) -> Path:
    folder.mkdir(parents=True)
    shutil.copy(DEPLOY / "dagster.yaml", folder / "dagster.yaml")
    return folder


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(DEPLOY / "systemd" / f"scrna-assets-{name}.service")
    return parser


def unit_command(name: str, workspace: Path, port: int | None) -> list[str]:
    """The unit's ExecStart with the installed paths mapped to this checkout and its port replaced."""
    words = shlex.split(unit(name)["Service"]["ExecStart"])
    assert words[0].startswith(INSTALLED_BIN), words
    words[0] = str(BIN / words[0][len(INSTALLED_BIN) :])
    words = [str(workspace) if word == INSTALLED_WORKSPACE else word for word in words]
    if port is not None:
        words[words.index("-p") + 1] = str(port)
    return words


# -- GraphQL ----------------------------------------------------------------------------------------

class GraphQL:
    def __init__(self, url: str) -> None:
        self.url = url

    def up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/server_info", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def query(self, text: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": text, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = json.loads(response.read())
        assert "errors" not in payload, payload
        return payload["data"]

    def location_loaded(self) -> bool:
        entries = self.query(
            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
            "locationOrLoadError { __typename } } } } }"
        )["workspaceOrError"]["locationEntries"]
        entry = next((e for e in entries if e["name"] == LOCATION), None)
        return bool(entry) and entry["loadStatus"] == "LOADED" and entry["locationOrLoadError"]["__typename"] == "RepositoryLocation"

    def launch(self, partition: str, h5ad_path: Path) -> dict:
        result = self.query(
            """mutation($params: ExecutionParams!) { launchPipelineExecution(executionParams: $params) {
                 __typename ... on LaunchRunSuccess { run { runId status } } ... on PythonError { message }
                 ... on RunConfigValidationInvalid { errors { message } } } }""",
            {"params": {
                "selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "pipelineName": JOB},
                "runConfigData": {"ops": {"parquet_chunks": {"config": {"h5ad_path": str(h5ad_path)}}}},
                "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
            }},
        )["launchPipelineExecution"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]


def wait_for(predicate, what: str, timeout: float, services: list[Service] = (), interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for service in services:
            service.check_running()
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    logs = "\n".join(f"--- {s.name} ---\n{s.tail(2500)}" for s in services)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end and a start at the same instant don't overlap)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def run_clis(commands: list[list[str]], env: dict[str, str], cwd: Path, timeout: float = 180) -> list[subprocess.CompletedProcess]:
    """Run commands side by side (each in a session of its own); all must succeed."""
    processes = [
        subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL, start_new_session=True)
        for command in commands
    ]
    results = []
    try:
        for command, process in zip(commands, processes):
            stdout, stderr = process.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(command, process.returncode, stdout, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
    for result in results:
        assert result.returncode == 0, f"{shlex.join(result.args)} -> {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return results


def run_cli(command: list[str], env: dict[str, str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return run_clis([command], env, cwd, timeout)[0]


# -- one host, many runs ----------------------------------------------------------------------------

@dataclass
class OneHost:
    root: Path
    env: dict[str, str]
    database: str
    dagster_home: Path
    scrna_home: Path
    incoming: Path
    services: dict[str, Service] = field(default_factory=dict)


@pytest.fixture
def one_host(tmp_path: Path, postgres: LocalPostgres, example_files, monkeypatch: pytest.MonkeyPatch) -> Iterator[OneHost]:
    from scrna_assets.core.synthetic import write_synthetic_h5ad

    database = postgres.create_database(f"dagster_{tmp_path.name.lower()[:40]}".replace("-", "_"))
    dagster_home = make_dagster_home(tmp_path / "dagster_home")
    scrna_home = tmp_path / "srv"
    (scrna_home / "data" / "input").mkdir(parents=True)  # watched by the sensor (stays empty here)
    incoming = tmp_path / "incoming"  # the files registered and submitted by hand
    incoming.mkdir()
    for seed, (name, cells) in enumerate(DATASETS.items()):
        write_synthetic_h5ad(incoming / f"{name}.h5ad", cells, n_genes=3000, nnz_per_cell=300, n_donors=24, seed=seed)
    env = production_env(postgres, database, dagster_home, scrna_home, example_files[1])
    for key in ("DAGSTER_HOME", "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD"):
        monkeypatch.setenv(key, env[key])  # for this process's own DagsterInstance
    host = OneHost(tmp_path, env, database, dagster_home, scrna_home, incoming)
    try:
        yield host
    finally:
        problems = []
        for name in ("webserver", "daemon", "code-server"):  # the code server last: it owns the runs
            if name in host.services:
                try:
                    host.services[name].stop()
                except AssertionError as error:
                    problems.append(str(error))
        assert not problems, problems


def test_queue_runs_partitions_two_at_a_time_on_postgres(one_host: OneHost, postgres: LocalPostgres) -> None:
    from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    host, env, cwd = one_host, one_host.env, one_host.scrna_home
    timings: dict[str, float] = {}
    started = time.monotonic()

    # Once per new database (and after every Dagster upgrade), as the README says.
    run_cli([str(BIN / "dagster"), "instance", "migrate"], env, cwd)
    timings["migrate"] = time.monotonic() - started

    # The three services, with the command lines of the unit files.
    code_port, web_port = free_port(), free_port()
    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    workspace["load_from"][0]["grpc_server"]["port"] = code_port
    workspace_file = host.root / "workspace.yaml"
    workspace_file.write_text(yaml.safe_dump(workspace))
    for name, port in (("code-server", code_port), ("daemon", None), ("webserver", web_port)):
        service = Service(name, unit_command(name, workspace_file, port), env, cwd, host.root / f"{name}.log")
        host.services[name] = service.start()
    services = list(host.services.values())

    # Meanwhile, what an operator does once: register the datasets, build the gene mapping.
    files = {name: host.incoming / f"{name}.h5ad" for name in DATASETS}
    registered, _ = run_clis([
        [str(BIN / "preprocess"), "register", *map(str, files.values())],
        [str(BIN / "dagster"), "asset", "materialize", "-m", LOCATION, "--select", "hgnc_mapper"],
    ], env, cwd)
    assert sorted(re.findall(r"registered (\S+)", registered.stdout)) == sorted(DATASETS)
    timings["register_and_hgnc"] = time.monotonic() - started

    graphql = GraphQL(f"http://127.0.0.1:{web_port}")
    wait_for(graphql.up, "the webserver", 180, services)
    wait_for(graphql.location_loaded, "the code location in the webserver", 180, services, interval=2)
    timings["services_up"] = time.monotonic() - started

    # Five runs into the queue: every dataset through GraphQL (as the UI launches), then TWICE
    # again with `dagster job launch` (the shell's way into the queue) right behind its first run.
    submitted = [(name, graphql.launch(name, files[name])) for name in DATASETS]
    assert {run["status"] for _, run in submitted} == {"QUEUED"}, submitted
    queued_at = time.monotonic()
    again = str(uuid.uuid4())
    run_cli([
        str(BIN / "dagster"), "job", "launch", "-w", str(workspace_file), "-j", JOB, "--run-id", again,
        "--tags", json.dumps({"dagster/partition": TWICE}),
        "--config-json", json.dumps({"ops": {"parquet_chunks": {"config": {"h5ad_path": str(files[TWICE])}}}}),
    ], env, cwd)
    submitted.append((TWICE, {"runId": again}))
    run_ids = [run["runId"] for _, run in submitted]

    instance = DagsterInstance.from_config(str(host.dagster_home))
    try:
        def all_done() -> bool:
            runs = instance.get_runs(RunsFilter(run_ids=run_ids))
            return len(runs) == len(run_ids) and all(r.is_finished for r in runs)

        wait_for(all_done, "the five runs", 240, services, interval=1)
        timings["runs"] = time.monotonic() - queued_at

        # Everything went through Postgres, nothing through a SQLite file.
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert not list(host.dagster_home.rglob("*.db")), list(host.dagster_home.rglob("*.db"))

        records = {r.dagster_run.run_id: r for r in instance.get_run_records(RunsFilter(run_ids=run_ids))}
        failed = {rid: r.dagster_run.status for rid, r in records.items() if r.dagster_run.status != DagsterRunStatus.SUCCESS}
        assert not failed, (failed, {s.name: s.tail(2000) for s in services})
        for run_id in run_ids:
            types = {e.dagster_event.event_type for e in instance.all_logs(run_id) if e.dagster_event}
            assert {DagsterEventType.RUN_ENQUEUED, DagsterEventType.RUN_STARTING} <= types, (run_id, types)

        # At most two at once, and the queue did run two at once.
        spans = {rid: (r.start_time, r.end_time) for rid, r in records.items()}
        peak = max_overlap(list(spans.values()))
        assert peak <= MAX_CONCURRENT, spans
        assert peak == MAX_CONCURRENT, f"the queue never ran {MAX_CONCURRENT} runs at once: {spans}"
        # The same dataset never twice at once: the second run started after the first ended.
        first, second = sorted((spans[run["runId"]] for name, run in submitted if name == TWICE), key=lambda s: s[0])
        assert second[0] >= first[1], (first, second)

        # Run history and partitions are rows in Postgres.
        rows = dict(postgres.query(host.database, "SELECT run_id, status FROM runs WHERE pipeline_name = %s", JOB))
        assert {rid: rows.get(rid) for rid in run_ids} == {rid: "SUCCESS" for rid in run_ids}
        partitions = postgres.query(host.database, "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'datasets'")
        assert sorted(p for (p,) in partitions) == sorted(DATASETS)
        materialized = dict(postgres.query(
            host.database,
            "SELECT partition, count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
            "AND asset_key = %s GROUP BY partition", '["train_test_splits"]',
        ))
        assert materialized == {name: 2 if name == TWICE else 1 for name in DATASETS}
        # Only our runs: the sensor watched an empty folder and requested nothing.
        assert len(instance.get_runs(RunsFilter(job_name=JOB))) == len(run_ids)
    finally:
        instance.dispose()

    # Outputs: complete, one folder per dataset, each holding only its own cells.
    output, interim = host.scrna_home / "data" / "output", host.scrna_home / "data" / "interim"
    assert sorted(p.name for p in output.iterdir()) == sorted(DATASETS)
    for name, cells in DATASETS.items():
        folder = output / name
        provenance = json.loads((folder / "provenance.json").read_text())
        assert provenance["input"]["path"] == str(files[name].resolve())
        train = pl.read_parquet(folder / "train" / "chunks")
        test = pl.read_parquet(folder / "test" / "chunks")
        assert train.height + test.height == provenance["figures"]["cells_with_age"] > 0
        assert provenance["figures"]["cells"] == cells
        both = pl.concat([train.select("cell_id", "dataset"), test.select("cell_id", "dataset")])
        assert both["dataset"].unique().to_list() == [name]
        assert both["cell_id"].n_unique() == both.height
        log = [json.loads(line) for line in (host.scrna_home / "logs" / name / "pipeline.json").read_text().splitlines()]
        assert {record["dataset"] for record in log} == {name}
    # Nothing half-written left behind: no staging or retired folders, interim removed after the split.
    leftovers = [p for p in (output, interim) for p in p.rglob(".*") if p.name.startswith((".staging-", ".retired-"))]
    assert not leftovers, leftovers
    for asset in ("parquet_chunks", "aged_chunks"):
        assert not (interim / asset).exists() or not any((interim / asset).iterdir())

    timings["total"] = time.monotonic() - started
    origin = min(start for start, _ in spans.values())
    timeline = sorted((spans[run["runId"]][0] - origin, spans[run["runId"]][1] - origin, name) for name, run in submitted)
    print(
        f"\n[deploy] runs={len(run_ids)} max_concurrent={peak} "
        + " ".join(f"{k}={v:.1f}s" for k, v in timings.items())
        + " timeline=" + " ".join(f"{name}[{start:.1f}-{end:.1f}]" for start, end, name in timeline)
    )
    for service in services:
        service.check_running()


# -- the files themselves ---------------------------------------------------------------------------

def env_refs(config: object) -> set[str]:
    """Every `{env: NAME}` in a Dagster config tree."""
    if isinstance(config, dict):
        if set(config) == {"env"}:
            return {config["env"]}
        return set().union(*(env_refs(v) for v in config.values())) if config else set()
    if isinstance(config, list):
        return set().union(*(env_refs(v) for v in config)) if config else set()
    return set()


def test_deploy_files_parse_and_agree() -> None:
    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    for path in (DEPLOY / "helm").glob("*.yaml"):
        assert isinstance(yaml.safe_load(path.read_text()), dict), path

    # The instance: Postgres with the psycopg2 scheme, the queue (2 at once, 1 per dataset).
    assert instance["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    queue = instance["run_coordinator"]
    assert queue["class"] == "QueuedRunCoordinator"
    assert queue["config"]["max_concurrent_runs"] == MAX_CONCURRENT
    assert queue["config"]["tag_concurrency_limits"] == [
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ]
    # Every variable the instance reads is in the environment file, which sets DAGSTER_HOME too.
    env = env_file()
    assert env_refs(instance) <= set(env), env_refs(instance) - set(env)
    assert "DAGSTER_HOME" in env and "SCRNA_HOME" in env

    # The units: the same environment file, entry points that exist, one code server they share.
    commands = {}
    for name in UNIT_NAMES:
        parsed = unit(name)
        assert parsed["Unit"]["Description"] and parsed["Install"]["WantedBy"] == "multi-user.target"
        service = parsed["Service"]
        assert service["EnvironmentFile"] == "/etc/scrna-assets/scrna-assets.env"
        assert service["User"] == "scrna" and service["Restart"] in ("always", "on-failure")
        commands[name] = words = shlex.split(service["ExecStart"])
        assert (BIN / words[0][len(INSTALLED_BIN) :]).exists(), words[0]
    code_server = commands["code-server"]
    assert code_server[1:3] == ["code-server", "start"]
    assert code_server[code_server.index("-m") + 1] == LOCATION
    grpc = workspace["load_from"][0]["grpc_server"]
    assert grpc["location_name"] == code_server[code_server.index("--location-name") + 1] == LOCATION
    assert grpc["port"] == int(code_server[code_server.index("-p") + 1])
    assert commands["daemon"][1:] == ["run", "-w", INSTALLED_WORKSPACE]
    assert commands["webserver"][commands["webserver"].index("-w") + 1] == INSTALLED_WORKSPACE
    for name in ("daemon", "webserver"):
        assert "scrna-assets-code-server.service" in unit(name)["Unit"]["After"]


def test_instance_config_validates_and_uses_postgres(postgres: LocalPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, example_files) -> None:
    from dagster import DagsterInstance
    from dagster._core.launcher import DefaultRunLauncher
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import PostgresRunStorage

    database = postgres.create_database("dagster_config_check")
    home = make_dagster_home(tmp_path / "dagster_home")
    env = production_env(postgres, database, home, tmp_path / "srv", example_files[1])
    for key, value in env.items():
        if key.startswith("DAGSTER_"):
            monkeypatch.setenv(key, value)
    with DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.run_launcher, DefaultRunLauncher)
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        queue = coordinator.get_run_queue_config()
        assert queue.max_concurrent_runs == MAX_CONCURRENT
        assert list(queue.tag_concurrency_limits) == [{"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
        assert coordinator.dequeue_use_threads
        assert instance.run_monitoring_enabled
        assert instance.get_runs() == []
    assert postgres.query(database, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'runs'") == [(1,)]

    # Without the scheme, SQLAlchemy picks psycopg 3, which is not installed: the scheme is needed.
    plain = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    del plain["storage"]["postgres"]["postgres_db"]["scheme"]
    (home / "dagster.yaml").write_text(yaml.safe_dump(plain))
    with pytest.raises(Exception, match="psycopg"):
        with DagsterInstance.from_config(str(home)) as instance:
            instance.get_runs()


def test_code_location_loads_with_production_settings(postgres: LocalPostgres, tmp_path: Path, example_files) -> None:
    database = postgres.create_database("dagster_validate")
    home = make_dagster_home(tmp_path / "dagster_home")
    env = production_env(postgres, database, home, tmp_path / "srv", example_files[1])
    (tmp_path / "srv").mkdir()
    result = run_cli([str(BIN / "dagster"), "definitions", "validate", "-m", LOCATION], env, tmp_path / "srv")
    assert f"Validation successful for code location {LOCATION}" in result.stdout + result.stderr


def camel_to_snake(tree: object) -> object:
    """What the chart does to runK8sConfig (and what its templates do to the other keys)."""
    if isinstance(tree, dict):
        return {re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower(): camel_to_snake(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [camel_to_snake(value) for value in tree]
    return tree


def helm_values() -> dict:
    return yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())


def test_helm_values_keep_the_instance_settings() -> None:
    from dagster._config import process_config
    from dagster._core.run_coordinator import QueuedRunCoordinator

    values = helm_values()
    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    local_queue = instance["run_coordinator"]["config"]

    # Storage: the chart's own PostgreSQL off, the same driver scheme as on one host.
    assert values["postgresql"]["enabled"] is False
    assert values["postgresql"]["postgresqlScheme"] == instance["storage"]["postgres"]["postgres_db"]["scheme"]
    assert values["generatePostgresqlPasswordSecret"] is False and values["global"]["postgresqlSecretName"]

    # The queue: the same per-dataset limit and dequeue settings; only the overall limit differs.
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    rendered = camel_to_snake(coordinator["config"]["queuedRunCoordinator"])
    rendered["tag_concurrency_limits"] = coordinator["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    checked = process_config(QueuedRunCoordinator.config_type(), rendered)
    assert checked.success, checked.errors
    for key in ("tag_concurrency_limits", "dequeue_interval_seconds", "dequeue_use_threads", "dequeue_num_workers"):
        assert rendered[key] == local_queue[key], key
    assert rendered["max_concurrent_runs"] >= local_queue["max_concurrent_runs"]
    assert values["dagsterDaemon"]["runMonitoring"]["enabled"] is True

    # One pod per run, from the code location's image, with the data volume of the code server.
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    assert deployment["image"]["tag"] != "latest"
    mounts = {m["name"]: m["mountPath"] for m in deployment["volumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in deployment["volumes"]}
    assert mounts == {"scrna-data": deployment["env"]["SCRNA_HOME"]}
    pvc = yaml.safe_load((DEPLOY / "helm" / "shared-data.yaml").read_text())
    assert claims == {"scrna-data": pvc["metadata"]["name"]} and pvc["spec"]["accessModes"] == ["ReadWriteMany"]

    # The chart starts the image as `dagster code-server start -h 0.0.0.0 -p <port> <codeServerArgs>`.
    cmd = json.loads(dockerfile_instructions("CMD")[-1])
    assert cmd[:3] == ["dagster", "code-server", "start"]
    assert deployment["codeServerArgs"] == ["-m", cmd[cmd.index("-m") + 1]] == ["-m", LOCATION]
    assert str(deployment["port"]) == cmd[cmd.index("-p") + 1] == dockerfile_instructions("EXPOSE")[-1]
    assert dict(line.split("=", 1) for line in dockerfile_instructions("ENV") if line.startswith("SCRNA_HOME="))["SCRNA_HOME"] == deployment["env"]["SCRNA_HOME"]


def test_run_pod_from_helm_values_mounts_the_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Kubernetes Job that K8sRunLauncher would create for one partition run, built by
    dagster-k8s itself from what the chart renders out of deploy/helm/values.yaml."""
    pytest.importorskip("dagster_k8s", reason="dagster-k8s is in the k8s dependency group: uv sync --group k8s")
    import dagster_k8s.launcher
    from dagster import DagsterRun
    from dagster._config import process_config
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.job import construct_dagster_k8s_job

    values = helm_values()
    launcher_values = values["runLauncher"]["config"]["k8sRunLauncher"]
    launcher_config = {
        "load_incluster_config": launcher_values["loadInclusterConfig"], "job_namespace": "scrna",
        "image_pull_policy": launcher_values["imagePullPolicy"], "service_account_name": "scrna-dagster",
        "dagster_home": "/opt/dagster/dagster_home", "instance_config_map": "scrna-dagster-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
        "env_config_maps": ["scrna-dagster-pipeline-env"], "labels": launcher_values["labels"],
        "fail_pod_on_run_failure": launcher_values["failPodOnRunFailure"],
        "resources": launcher_values["resources"], "run_k8s_config": camel_to_snake(launcher_values["runK8sConfig"]),
    }
    checked = process_config(K8sRunLauncher.config_type(), launcher_config)
    assert checked.success, checked.errors
    monkeypatch.setattr(dagster_k8s.launcher, "load_kubernetes_config", lambda **_: None)  # no cluster here
    launcher = K8sRunLauncher(**checked.value, k8s_client_batch_api=object(), k8s_client_core_api=object())

    (deployment,) = values["dagster-user-deployments"]["deployments"]
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    code_location_context = {"k8s": {  # what the chart passes to the code server (includeConfigInLaunchedRuns)
        "image_pull_policy": deployment["image"]["pullPolicy"], "env_config_maps": ["scrna-dagster-scrna-assets-user-env"],
        "volume_mounts": deployment["volumeMounts"], "volumes": deployment["volumes"],
    }}
    origin = JobPythonOrigin(JOB, RepositoryPythonOrigin(
        executable_path="/opt/scrna-assets/.venv/bin/python", code_pointer=ModuleCodePointer(LOCATION, "defs", None),
        container_image=image, container_context=code_location_context,
    ))
    run = DagsterRun(job_name=JOB, run_id="0f0f0f0f-0000-4000-8000-000000000000", tags={"dagster/partition": "donors_a"}, job_code_origin=origin)
    context = launcher.get_container_context_for_run(run)
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image=image, run_launcher=launcher),
        args=["dagster", "api", "execute_run", "..."], job_name="dagster-run-0f0f0f0f", pod_name="dagster-run-0f0f0f0f",
        component="run_worker", user_defined_k8s_config=context.run_k8s_config, labels={"dagster/job": JOB},
    ).to_dict()

    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == image
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["scrna-data"]["persistent_volume_claim"]["claim_name"] == "scrna-data"
    assert {m["name"]: m["mount_path"] for m in container["volume_mounts"]}["scrna-data"] == deployment["env"]["SCRNA_HOME"]
    assert {k: container["resources"][k] for k in ("requests", "limits")} == launcher_values["resources"]
    assert {"scrna-dagster-scrna-assets-user-env", "scrna-dagster-pipeline-env"} <= {
        e["config_map_ref"]["name"] for e in container["env_from"] if e.get("config_map_ref")
    }
    assert job["spec"]["backoff_limit"] == 0 and job["spec"]["ttl_seconds_after_finished"] == 86400
    assert job["metadata"]["labels"]["app.kubernetes.io/part-of"] == "scrna-assets"


# -- the image ---------------------------------------------------------------------------------------

def dockerfile_instructions(keyword: str) -> list[str]:
    """Arguments of every `keyword` instruction of deploy/Dockerfile (continuation lines joined; ENV
    split into KEY=VALUE words)."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    found = []
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word.upper() == keyword:
            found += shlex.split(rest) if keyword == "ENV" else [rest.strip()]
    return found


def test_dockerfile_installs_the_locked_environment() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    locked = {p["name"]: p["version"] for p in lock["package"]}
    (base,) = dockerfile_instructions("FROM")
    python = re.match(r"python:(\d+)\.(\d+)", base)
    assert python and (int(python[1]), int(python[2])) >= tuple(map(int, project["project"]["requires-python"].lstrip(">=").split(".")))

    # Every file copied is in the repository, and the build context's ignore file lets it through.
    allowed = [line for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines() if line.startswith("!")]
    for copy in dockerfile_instructions("COPY"):
        for source in shlex.split(copy)[:-1]:
            assert (REPO / source).exists(), source
            assert any(rule[1:].split("/")[0] == source for rule in allowed), source

    # The locked environment, without dev tools, with dagster-k8s for the run pods.
    syncs = [run for run in dockerfile_instructions("RUN") if "uv sync" in run]
    assert syncs and all("--frozen" in s and "--no-dev" in s and "--group k8s" in s for s in syncs)
    assert any(d.startswith("dagster-postgres==") for d in project["project"]["dependencies"])
    assert any(d.startswith("dagster-k8s==") for d in project["dependency-groups"]["k8s"])
    # Dagster's libraries are released together with dagster: 1.X.Y goes with 0.(X+16).Y.
    major, minor, patch = locked["dagster"].split(".")
    library = f"0.{int(minor) + 16}.{patch}"
    assert locked["dagster-postgres"] == locked["dagster-k8s"] == library, (locked["dagster"], library)
    # The Helm chart (its webserver and daemon images) is installed at the same version.
    assert f"dagster/dagster --version {locked['dagster']} " in (DEPLOY / "helm" / "values.yaml").read_text()
    uv_pin = next(run for run in dockerfile_instructions("RUN") if "pip install" in run and "uv==" in run)
    assert re.search(r"uv==\d+\.\d+\.\d+", uv_pin)

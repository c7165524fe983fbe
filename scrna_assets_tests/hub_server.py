"""A tiny in-process stand-in for the HuggingFace Hub HTTP API, for upload tests without internet.

It implements just what the real ``huggingface_hub`` client (2.4) calls for ``create_repo``,
``repo_info``, ``list_repo_files`` and ``create_commit`` over *plain LFS* or regular uploads:

* ``POST /api/repos/create``
* ``GET  /api/{type}s/{repo}[/revision/{rev}]`` and ``GET /api/{type}s/{repo}/tree/{rev}[/{path}]``
* ``POST /api/validate-yaml`` (really parses the card's YAML front matter)
* ``POST /api/{type}s/{repo}/preupload/{rev}``  (``.parquet``/binary/large -> ``lfs``, else ``regular``)
* ``POST /{type}s/{repo}.git/info/lfs/objects/batch`` (``basic`` transfer; no actions for known objects)
* ``PUT  /lfs-storage/{type}s/{repo}/{oid}`` and ``POST /lfs-verify/...`` (checks sha256 and size;
  objects are kept per repo, as the Hub does)
* ``POST /api/{type}s/{repo}/commit/{rev}`` (ndjson: file, lfsFile, deletedFile, deletedFolder)

Xet: in huggingface_hub 2.4 the client picks Xet by itself whenever ``hf_xet`` is importable and
``constants.HF_HUB_DISABLE_XET`` is false; no server answer can steer it back to LFS (preupload only
says lfs/regular, and the LFS batch call is never made on the Xet path). Tests must therefore set
``HF_HUB_DISABLE_XET`` (see ``hub_client_env``). The Xet token endpoints answer 501 with a clear
message, so a test that forgot to do so fails at once instead of trying to reach a CAS server.

Everything received is kept in memory (repos, private flag, Authorization headers, committed file
contents, LFS objects by sha256, counters) for the tests to inspect. Faults can be injected per
endpoint to test failure and resume paths.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

if TYPE_CHECKING:
    import pytest

_TYPE = r"(?P<type>model|dataset|space)s"
_REPO = r"(?P<repo>[^/]+/[^/]+)"
_REV = r"(?P<rev>[^/]+)"
_ROUTES: list[tuple[str, str, re.Pattern[str]]] = [
    ("POST", "create_repo", re.compile(r"/api/repos/create")),
    ("POST", "validate_yaml", re.compile(r"/api/validate-yaml")),
    ("GET", "repo_info", re.compile(rf"/api/{_TYPE}/{_REPO}(?:/revision/{_REV})?")),
    ("GET", "tree", re.compile(rf"/api/{_TYPE}/{_REPO}/tree/{_REV}(?:/(?P<path>.+))?")),
    ("POST", "preupload", re.compile(rf"/api/{_TYPE}/{_REPO}/preupload/{_REV}")),
    ("POST", "commit", re.compile(rf"/api/{_TYPE}/{_REPO}/commit/{_REV}")),
    ("GET", "xet_token", re.compile(rf"/api/{_TYPE}/{_REPO}/xet-(?:read|write)-token(?:/.*)?")),
    ("POST", "lfs_batch", re.compile(rf"/(?:{_TYPE}/)?{_REPO}\.git/info/lfs/objects/batch")),
    ("PUT", "lfs_upload", re.compile(rf"/lfs-storage/{_TYPE}/{_REPO}/(?P<oid>[0-9a-f]{{64}})")),
    ("POST", "lfs_verify", re.compile(rf"/lfs-verify/{_TYPE}/{_REPO}/(?P<oid>[0-9a-f]{{64}})")),
]
_NEEDS_AUTH = {"create_repo", "preupload", "commit", "lfs_batch", "lfs_verify"}
_LFS_SUFFIXES = (".parquet", ".arrow", ".bin", ".safetensors", ".h5ad", ".zip", ".gz")
_LFS_MIN_SIZE = 10 * 1024 * 1024


TOKEN = "hf_localTestToken0123456789abcdef"
"""The token tests hand to the client; it must reach the server and nothing else."""


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a regular file, as the Hub reports it."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class StoredFile:
    content: bytes
    lfs_oid: str | None = None  # sha256 hex when the file was committed as an LFS pointer

    @property
    def oid(self) -> str:
        """What preupload reports: sha256 for LFS files, the git blob sha1 otherwise (as the client expects)."""
        return self.lfs_oid or git_blob_sha1(self.content)


@dataclass
class CommitRecord:
    oid: str
    summary: str
    description: str
    added: list[str]
    deleted: list[str]


@dataclass
class RepoState:
    repo_type: str
    repo_id: str
    private: bool
    files: dict[str, StoredFile] = field(default_factory=dict)
    commits: list[CommitRecord] = field(default_factory=list)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # sha256 hex -> content, per repo as on the Hub

    @property
    def head(self) -> str:
        return self.commits[-1].oid if self.commits else "0" * 40


@dataclass
class Fault:
    """Answer ``status`` on an endpoint after ``after`` successful calls, ``times`` times (None: always)."""

    status: int
    after: int = 0
    times: int | None = None
    message: str = "injected failure"
    echo_authorization: bool = False  # put the Authorization header in the error body (a leaky server)
    seen: int = 0


def hub_client_env(monkeypatch: pytest.MonkeyPatch, url: str, token: str | None) -> None:
    """Point the real huggingface_hub client at ``url`` for one test, over plain LFS.

    huggingface_hub reads its environment once, at import, into ``huggingface_hub.constants``, and
    ``HfApi()`` takes ``constants.ENDPOINT`` when it is built; so both the variables (for anything
    imported later) and the constants are patched. The shared HTTP client is closed so no pooled
    connection or proxy setting from earlier survives.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import close_session

    if token is None:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    else:
        monkeypatch.setenv("HF_TOKEN", token)
    for name in ("HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("NO_PROXY", ",".join(filter(None, ["127.0.0.1", "localhost", os.environ.get("NO_PROXY")])))
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", "/nonexistent/huggingface-token")  # only HF_TOKEN counts
    monkeypatch.setattr(importlib.import_module("huggingface_hub.utils.tqdm"), "HF_HUB_DISABLE_PROGRESS_BARS", True)
    close_session()


class LocalHub:
    """The server plus everything it has received. Use as a context manager or start()/stop()."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], RepoState] = {}
        self.lfs_uploads = 0  # LFS objects actually received (PUT bodies stored), all repos
        self.calls: Counter[str] = Counter()  # endpoint name -> number of requests
        self.authorizations: list[str] = []  # every Authorization header seen
        self.unhandled: list[str] = []  # "METHOD path" of requests no route matched
        self.faults: dict[str, Fault] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalHub is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalHub:
        hub = self

        class Handler(_HubHandler):
            owner = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- test helpers -----------------------------------------------------------------------------
    def fail(self, endpoint: str, status: int, **options: Any) -> None:
        """Inject a fault on ``endpoint`` (a route name such as ``commit`` or ``lfs_upload``)."""
        with self.lock:
            self.faults[endpoint] = Fault(status, **options)

    def heal(self) -> None:
        """Remove every injected fault: the server works normally again."""
        with self.lock:
            self.faults.clear()

    def repo(self, repo_id: str, repo_type: str = "dataset") -> RepoState:
        return self.repos[(repo_type, repo_id)]

    def export(self, repo_id: str, target: Path, repo_type: str = "dataset") -> list[Path]:
        """Write the repo's current files under ``target`` (like a clone) and return their paths."""
        written = []
        for path, stored in sorted(self.repo(repo_id, repo_type).files.items()):
            destination = target / path
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(stored.content)
            written.append(destination)
        return written

    def _fault_for(self, endpoint: str) -> Fault | None:
        with self.lock:
            fault = self.faults.get(endpoint)
            if fault is None:
                return None
            fault.seen += 1
            if fault.seen <= fault.after:
                return None
            if fault.times is not None:
                if fault.times <= 0:
                    return None
                fault.times -= 1
            return fault


class _HubHandler(BaseHTTPRequestHandler):
    owner: LocalHub
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # buffer the response: headers and body leave in one segment (no Nagle/delayed-ACK stall)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        return

    # -- plumbing ---------------------------------------------------------------------------------
    def _body(self) -> bytes:
        """The request body, plain or chunked (the client streams file uploads)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: Any = None, headers: dict[str, str] | None = None) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        headers = {"X-Error-Message": " ".join(message.split())}  # one header line, whatever the message
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers)

    def _dispatch(self, method: str) -> None:
        hub = self.owner
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        body = self._body()  # always drain the body so keep-alive connections stay in sync
        authorization = self.headers.get("Authorization")
        with hub.lock:
            if authorization:
                hub.authorizations.append(authorization)
        for route_method, name, pattern in _ROUTES:
            match = pattern.fullmatch(path)
            if route_method == method and match:
                break
        else:
            with hub.lock:
                hub.unhandled.append(f"{method} {path}")
            self._error(404, f"not implemented by the local test hub: {method} {path}")
            return
        with hub.lock:
            hub.calls[name] += 1
        fault = hub._fault_for(name)
        if fault is not None:
            message = fault.message
            if fault.echo_authorization:
                message += f" (request authorization: {authorization})"
            self._error(fault.status, message)
            return
        if name in _NEEDS_AUTH and not (authorization or "").startswith("Bearer "):
            self._error(401, "Invalid credentials in Authorization header")
            return
        try:
            getattr(self, f"_{name}")(match.groupdict(), query, body)
        except Exception as error:  # a bug here: answer 400 (not retried) rather than drop the connection
            self._error(400, f"local test hub failed on {method} {path}: {type(error).__name__}: {error}")

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def _repo(self, params: dict[str, str]) -> RepoState | None:
        state = self.owner.repos.get((params["type"], params["repo"]))
        if state is None:
            self._error(404, "Repository not found", "RepoNotFound")
        return state

    def _base(self) -> str:
        return self.owner.url

    # -- endpoints --------------------------------------------------------------------------------
    def _create_repo(self, _: dict[str, str], __: dict[str, str], body: bytes) -> None:
        payload = json.loads(body or b"{}")
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self._base()}/{prefix}{repo_id}"
        with self.owner.lock:
            if (repo_type, repo_id) in self.owner.repos:
                self._send(409, {"error": "You already created this repo", "url": url})
                return
            self.owner.repos[(repo_type, repo_id)] = RepoState(
                repo_type, repo_id, private=payload.get("visibility") == "private"
            )
        self._send(200, {"url": url, "name": repo_id})

    def _repo_info(self, params: dict[str, str], _: dict[str, str], __: bytes) -> None:
        with self.owner.lock:
            state = self._repo(params)
            if state is None:
                return
            self._send(200, {
                "id": state.repo_id,
                "sha": state.head,
                "private": state.private,
                "siblings": [{"rfilename": path} for path in sorted(state.files)],
            })

    def _tree(self, params: dict[str, str], query: dict[str, str], _: bytes) -> None:
        recursive = query.get("recursive", "false").lower() == "true"
        prefix = (params.get("path") or "").strip("/")
        with self.owner.lock:
            state = self._repo(params)
            if state is None:
                return
            entries: dict[str, dict[str, Any]] = {}
            for path, stored in sorted(state.files.items()):
                if prefix and not path.startswith(prefix + "/"):
                    continue
                rest = path[len(prefix) + 1:] if prefix else path
                if not recursive and "/" in rest:
                    folder = f"{prefix}/{rest.split('/')[0]}" if prefix else rest.split("/")[0]
                    entries[folder] = {"type": "directory", "path": folder, "oid": "0" * 40, "size": 0}
                    continue
                entry: dict[str, Any] = {
                    "type": "file", "path": path, "size": len(stored.content), "oid": git_blob_sha1(stored.content),
                }
                if stored.lfs_oid:
                    entry["lfs"] = {"oid": stored.lfs_oid, "size": len(stored.content), "pointerSize": 134}
                entries[path] = entry
        self._send(200, list(entries.values()))

    def _validate_yaml(self, _: dict[str, str], __: dict[str, str], body: bytes) -> None:
        content = json.loads(body).get("content", "")
        errors = []
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.DOTALL)
        if match:
            try:
                metadata = yaml.safe_load(match.group(1))
                if metadata is not None and not isinstance(metadata, dict):
                    errors.append({"message": "YAML metadata must be a mapping"})
            except yaml.YAMLError as error:
                errors.append({"message": f"invalid YAML: {error}"})
        if errors:
            self._send(400, {"errors": errors, "warnings": []})
        else:
            warnings = [] if match else [{"message": "empty or missing yaml metadata in repo card"}]
            self._send(200, {"errors": [], "warnings": warnings})

    def _preupload(self, params: dict[str, str], _: dict[str, str], body: bytes) -> None:
        files = json.loads(body)["files"]
        with self.owner.lock:
            state = self._repo(params)
            if state is None:
                return
            answer = []
            for item in files:
                sample = base64.b64decode(item.get("sample", ""))
                lfs = (
                    item["path"].endswith(_LFS_SUFFIXES) or item["size"] >= _LFS_MIN_SIZE or b"\0" in sample
                )
                existing = state.files.get(item["path"])
                answer.append({
                    "path": item["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": existing.oid if existing else None,
                })
        self._send(200, {"files": answer, "commitOid": state.head})

    def _lfs_batch(self, params: dict[str, str], _: dict[str, str], body: bytes) -> None:
        payload = json.loads(body)
        if payload.get("operation") != "upload":
            self._error(400, "only uploads are supported")
            return
        if "basic" not in payload.get("transfers", ["basic"]):
            self._error(400, "only the basic transfer is supported")
            return
        objects = []
        params = {**params, "type": params.get("type") or "model"}
        where = f"{params['type']}s/{params['repo']}"
        with self.owner.lock:
            state = self._repo(params)
            if state is None:
                return
            for item in payload["objects"]:
                oid, size = item["oid"], item["size"]
                entry: dict[str, Any] = {"oid": oid, "size": size}
                if oid not in state.lfs_objects:
                    entry["actions"] = {
                        "upload": {"href": f"{self._base()}/lfs-storage/{where}/{oid}"},
                        "verify": {"href": f"{self._base()}/lfs-verify/{where}/{oid}"},
                    }
                objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_upload(self, params: dict[str, str], _: dict[str, str], body: bytes) -> None:
        oid = params["oid"]
        if hashlib.sha256(body).hexdigest() != oid:
            self._error(400, f"content does not match sha256 {oid}")
            return
        with self.owner.lock:
            state = self._repo(params)
            if state is None:
                return
            state.lfs_objects[oid] = body
            self.owner.lfs_uploads += 1
        self._send(200)

    def _lfs_verify(self, params: dict[str, str], _: dict[str, str], body: bytes) -> None:
        claimed = json.loads(body or b"{}")
        with self.owner.lock:
            state = self._repo(params)
            if state is None:
                return
            stored = state.lfs_objects.get(params["oid"])
        if stored is None or claimed.get("size") != len(stored):
            self._error(404, f"LFS object {params['oid']} is missing or has the wrong size")
            return
        self._send(200, {"oid": params["oid"], "size": len(stored)})

    def _xet_token(self, _: dict[str, str], __: dict[str, str], ___: bytes) -> None:
        self._error(501, "Xet is not supported by the local test hub: set HF_HUB_DISABLE_XET=1 to use plain LFS")

    def _commit(self, params: dict[str, str], _: dict[str, str], body: bytes) -> None:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), {})
        with self.owner.lock:
            state = self._repo(params)
            if state is None:
                return
            files = dict(state.files)
            added, deleted = [], []
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "file":
                    files[value["path"]] = StoredFile(base64.b64decode(value["content"]))
                    added.append(value["path"])
                elif key == "lfsFile":
                    content = state.lfs_objects.get(value["oid"])
                    if content is None:
                        self._error(400, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                        return
                    files[value["path"]] = StoredFile(content, lfs_oid=value["oid"])
                    added.append(value["path"])
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        self._error(404, "A file with this name doesn't exist", "EntryNotFound")
                        return
                    deleted.append(value["path"])
                elif key == "deletedFolder":
                    folder = value["path"].rstrip("/") + "/"
                    for path in [p for p in files if p.startswith(folder)]:
                        del files[path]
                        deleted.append(path)
                elif key != "header":
                    self._error(400, f"unsupported commit operation {key!r}")
                    return
            oid = hashlib.sha1(f"{state.head}\n{body.decode()}".encode()).hexdigest()
            state.files = files
            state.commits.append(CommitRecord(oid, header.get("summary", ""), header.get("description", ""), added, deleted))
            prefix = "" if state.repo_type == "model" else f"{state.repo_type}s/"
        self._send(200, {
            "commitUrl": f"{self._base()}/{prefix}{state.repo_id}/commit/{oid}",
            "commitOid": oid,
            "pullRequestUrl": None,
        })

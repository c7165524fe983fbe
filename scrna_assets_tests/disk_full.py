"""A real full disk for tests: run a command with a small tmpfs mounted on a folder.

The mount lives in a private mount namespace (``unshare --mount``; as an unprivileged user also
``--user --map-root-user``), so it vanishes with the command and the host never sees it. Files
written into the tmpfs vanish too: the command itself must check them and report (e.g. as JSON).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SKIP_REASON = "cannot mount a small tmpfs here (needs user namespaces or root)"

# $0 is the folder, $1 the size in KiB, the rest the command (never re-split by the shell).
_MOUNT_THEN_EXEC = 'mount -t tmpfs -o "size=${1}k,mode=0755" tmpfs "$0" && shift && exec "$@"'
_PREFIXES = (["unshare", "--user", "--map-root-user", "--mount"], ["unshare", "--mount"])


def _run(prefix: list[str], directory: Path, size_kib: int, command: Sequence[str], **kwargs: Any):
    argv = [*prefix, "sh", "-c", _MOUNT_THEN_EXEC, str(directory), str(int(size_kib)), *map(str, command)]
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 60)
    kwargs.setdefault("check", False)
    return subprocess.run(argv, **kwargs)


@functools.cache
def _working_prefix() -> tuple[str, ...] | None:
    """The first unshare form that can mount a tmpfs here (tried once per session)."""
    with tempfile.TemporaryDirectory() as folder:
        check = "import os, sys; st = os.statvfs(sys.argv[1]); sys.exit(st.f_blocks * st.f_frsize != 65536)"
        probe = [sys.executable, "-c", check, folder]
        for prefix in _PREFIXES:
            if prefix[1:] == ["--mount"] and os.geteuid() != 0:
                continue
            try:
                if _run(prefix, Path(folder), 64, probe).returncode == 0:
                    return tuple(prefix)
            except (OSError, subprocess.SubprocessError):
                continue
    return None


def disk_full_supported() -> bool:
    """True if ``run_on_small_tmpfs`` works here; tests ``pytest.skip(SKIP_REASON)`` otherwise."""
    return _working_prefix() is not None


def run_on_small_tmpfs(
    directory: Path, size_kib: int, command: Sequence[str], **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (a list of args) with a ``size_kib`` KiB tmpfs mounted on ``directory``.

    ``directory`` must exist; what was in it is hidden while the command runs. Keyword arguments
    go to ``subprocess.run`` (default: capture text output, 60 s timeout, no check).
    """
    prefix = _working_prefix()
    if prefix is None:
        raise RuntimeError(SKIP_REASON)
    return _run(list(prefix), directory, size_kib, command, **kwargs)


def run_python_on_small_tmpfs(directory: Path, size_kib: int, code: str, *args: str) -> Any:
    """Run ``code`` with this interpreter on a ``size_kib`` KiB tmpfs at ``directory``; its JSON report.

    ``sys.argv[1]`` is ``directory``, then ``args``. The code must print one JSON value as its last
    line of output (what it saw on the tmpfs, which is gone once it exits).
    """
    done = run_on_small_tmpfs(directory, size_kib, [sys.executable, "-c", code, str(directory), *args])
    if done.returncode != 0:
        raise AssertionError(f"child failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])

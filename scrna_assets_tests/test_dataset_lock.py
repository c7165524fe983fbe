"""The dataset lock: one holder across processes, re-entrant inside one, and a refusal that names the holder."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scrna_assets.dataset_lock import DatasetBusyError, DatasetLock

HOLD = """
import sys
from pathlib import Path
from scrna_assets.dataset_lock import DatasetLock
with DatasetLock(Path(sys.argv[1]), "d", "run-A"):
    print("held", flush=True)
    sys.stdin.read()
"""


def hold_elsewhere(path: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "held\n"
    return process


def test_a_second_process_is_refused_with_the_holder_named_and_the_record_kept(tmp_path: Path) -> None:
    path = tmp_path / ".locks" / "d.lock"
    holder = hold_elsewhere(path)
    record = json.loads(path.read_text())
    with pytest.raises(DatasetBusyError) as refused:
        DatasetLock(path, "d", "run-B").acquire()
    assert str(refused.value) == (
        f"dataset 'd' is busy: run run-A (pid {holder.pid} on {socket.gethostname()}, since {record['since']}) holds it ({path}); "
        "this run wrote and deleted nothing; try again when that run has finished"
    )
    assert json.loads(path.read_text()) == record  # the refused run did not truncate the holder's record
    holder.communicate("")
    with DatasetLock(path, "d", "run-B"):
        assert json.loads(path.read_text())["run_id"] == "run-B"


def test_a_killed_holder_frees_the_dataset(tmp_path: Path) -> None:
    path = tmp_path / "d.lock"
    holder = hold_elsewhere(path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with DatasetLock(path, "d", "run-B") as lock:
        assert lock.held_here


def test_re_entrant_in_one_process_and_released_by_the_outermost_exit(tmp_path: Path) -> None:
    path = tmp_path / "d.lock"
    outer = DatasetLock(path, "d", "run-A")
    with outer:
        with DatasetLock(path, "d", "run-A (inner)"):
            assert outer.held_here
        assert outer.held_here and json.loads(path.read_text())["run_id"] == "run-A"
    assert not outer.held_here
    holder = hold_elsewhere(path)  # another process can take it now
    holder.communicate("")

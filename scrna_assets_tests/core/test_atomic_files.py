"""Atomic writes: a real full disk (a 64 KiB tmpfs) or an interrupted write leaves no trace."""

from __future__ import annotations

import errno
import os
import pickle
import textwrap
from pathlib import Path

import pytest

from scrna_assets.core import atomic_files
from scrna_assets.core.atomic_files import WriteError, append_text_atomic, write_bytes_atomic, write_failure_message
from scrna_assets_tests.disk_full import SKIP_REASON, disk_full_supported, run_python_on_small_tmpfs

needs_tmpfs = pytest.mark.skipif(not disk_full_supported(), reason=SKIP_REASON)

# Runs on the tmpfs: records how much each os.write wrote (to prove a write was cut short
# half-way, not refused up front), does one call, reports what is left.
CHILD = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from scrna_assets.core.atomic_files import WriteError, append_text_atomic, write_bytes_atomic

    folder, action, old = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    target = folder / "file.txt"
    if old:
        target.write_text(old)
    written = []
    real_write = os.write
    def counting_write(fd, data):
        n = real_write(fd, data)
        written.append(n)
        return n
    os.write = counting_write
    report = {"raised": None}
    try:
        if action == "write":
            write_bytes_atomic(target, b"x" * 200_000)
        else:
            append_text_atomic(target, "y" * 200_000)
    except WriteError as error:
        report = {"raised": str(error), "errno": error.errno, "is_oserror": isinstance(error, OSError)}
    os.write = real_write
    report["written"] = written
    report["files"] = sorted(p.name for p in folder.iterdir())
    report["content"] = target.read_text() if target.exists() else None
    print(json.dumps(report))
    """
)


@needs_tmpfs
@pytest.mark.parametrize("action", ["write", "append"])
@pytest.mark.parametrize("old", ["old content\n", ""])
def test_full_disk_leaves_the_file_as_it_was(tmp_path: Path, action: str, old: str) -> None:
    """200 kB into 64 KiB: a short write, then ENOSPC; one message naming the folder, no *.tmp,
    the old file byte-identical (or still absent)."""
    full = tmp_path / "full"
    full.mkdir()
    report = run_python_on_small_tmpfs(full, 64, CHILD, action, old)
    assert report["raised"] == f"no space left in {full} (the disk or quota is full)"
    assert (report["errno"], report["is_oserror"]) == (errno.ENOSPC, True)
    assert 0 < report["written"][0] < 200_000  # really cut short half-way
    assert report["files"] == (["file.txt"] if old else [])
    assert report["content"] == (old or None)


def test_interrupt_mid_write_removes_the_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C after half the bytes: the tmp file goes, the old file stays, the interrupt is not wrapped."""
    target = tmp_path / "summary.json"
    target.write_bytes(b"old")
    real_write = os.write

    def half_then_interrupt(fd: int, data: bytes) -> int:
        monkeypatch.setattr(atomic_files.os, "write", interrupted)
        return real_write(fd, bytes(data[: len(data) // 2]))

    def interrupted(fd: int, data: bytes) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic_files.os, "write", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_bytes_atomic(target, b"new content")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_other_os_error_mid_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An I/O error becomes a WriteError naming the file, errno and cause kept, no tmp left."""
    target = tmp_path / "out" / "a.bin"
    original = OSError(errno.EIO, "Input/output error")

    def fail(fd: int, data: bytes) -> int:
        raise original

    monkeypatch.setattr(atomic_files.os, "write", fail)
    with pytest.raises(WriteError) as caught:
        write_bytes_atomic(target, b"data")
    monkeypatch.undo()
    assert str(caught.value) == f"cannot write {target}: Input/output error"
    assert (caught.value.errno, caught.value.filename, caught.value.__cause__) == (errno.EIO, str(target), original)
    assert list(target.parent.iterdir()) == []


def test_append_cut_short_is_truncated_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Half a line written, then ENOSPC: the log is byte-identical to before."""
    log = tmp_path / "pipeline.log"
    log.write_bytes(b"line 1\n")
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        monkeypatch.setattr(atomic_files.os, "write", full)
        return real_write(fd, bytes(data[: len(data) // 2]))

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_files.os, "write", half_then_full)
    with pytest.raises(OSError, match=r"^no space left in .* \(the disk or quota is full\)$") as caught:
        append_text_atomic(log, "line 2 is long enough\n")
    monkeypatch.undo()
    assert str(caught.value) == f"no space left in {tmp_path} (the disk or quota is full)"
    assert log.read_bytes() == b"line 1\n"


def test_success(tmp_path: Path) -> None:
    """Parent folders are made, content exact, mode is 0o666 minus umask like any file, no tmp left."""
    target = tmp_path / "a" / "b" / "x.json"
    write_bytes_atomic(target, b"one")
    write_bytes_atomic(target, b"two")
    log = tmp_path / "logs" / "pipeline.log"
    append_text_atomic(log, "é 1\n")
    append_text_atomic(log, "é 2\n")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_bytes() == b"two"
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]
    assert log.read_bytes() == "é 1\né 2\n".encode()


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.ENOSPC, "no space left in /data/logs (the disk or quota is full)"),
        (errno.EDQUOT, "no space left in /data/logs (the disk or quota is full)"),
        (errno.EACCES, "cannot write in /data/logs: permission denied"),
        (errno.EPERM, "cannot write in /data/logs: permission denied"),
        (errno.EROFS, "cannot write in /data/logs: read-only file system"),
        (errno.EIO, "cannot write /data/logs/run.json: Input/output error"),
    ],
)
def test_messages(code: int, expected: str) -> None:
    error = OSError(code, os.strerror(code))
    assert write_failure_message(error, Path("/data/logs/run.json")) == expected
    wrapped = WriteError(code, os.strerror(code), "/data/logs/run.json")
    assert str(wrapped) == expected
    restored = pickle.loads(pickle.dumps(wrapped))  # crosses process boundaries intact
    assert (type(restored), restored.errno, str(restored)) == (WriteError, code, expected)

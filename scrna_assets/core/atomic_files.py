"""Writing files so that a failure (disk full, Ctrl-C, permission) never leaves a half file behind.

Whole files go to a temporary file beside the target and are renamed into place, so a reader
sees the old content or the new one, never a mix. Log lines are appended and cut back on error,
so a log never ends in half a line. Failures are raised as ``WriteError``: still an ``OSError``
with the same errno, but its message is one line for people naming the folder and the problem.
Standard library only, so any part of the project can use it.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import os
from pathlib import Path

_NO_SPACE = {errno_codes.ENOSPC, errno_codes.EDQUOT}
_DENIED = {errno_codes.EACCES, errno_codes.EPERM}


def write_failure_message(error: OSError, path: Path) -> str:
    """One line for people: which folder, and what is wrong with it (the errno alone says little)."""
    folder = path.parent
    if error.errno in _NO_SPACE:
        return f"no space left in {folder} (the disk or quota is full)"
    if error.errno in _DENIED:
        return f"cannot write in {folder}: permission denied"
    if error.errno == errno_codes.EROFS:
        return f"cannot write in {folder}: read-only file system"
    return f"cannot write {path}: {error.strerror or 'unknown error'}"


class WriteError(OSError):
    """A failed write of ``filename``; errno is kept, so ``except OSError`` callers still work.

    Built like an OSError (errno, strerror, filename), so it pickles; ``str()`` is the one-line
    message of ``write_failure_message``. Not a ``FileNotFoundError`` etc.: catch by errno.
    """

    def __str__(self) -> str:
        return write_failure_message(self, Path(self.filename))


def _as_write_error(error: OSError, path: Path) -> WriteError:
    if isinstance(error, WriteError):
        return error
    return WriteError(error.errno, error.strerror or str(error), str(path))


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` may write only part (e.g. just before the disk fills); loop until all is out."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` all at once: readers see the old file or the new one.

    Writes ``.{name}.{random hex}.tmp`` in the same folder (same filesystem, so the rename is
    atomic), fsyncs it (so after a crash the name never points at an empty file; the files written
    here are small, so the cost is negligible), then ``os.replace``s it into place. On any
    exception, Ctrl-C included, the temporary file is removed; OSErrors become ``WriteError``.
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
    created = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # 0o666 minus the umask, like an ordinary file (tempfile would make it 0o600).
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        created = True
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, path)
    except BaseException as error:
        if created:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _as_write_error(error, path) from error
        raise


def append_text_atomic(path: Path, text: str) -> None:
    """Append ``text`` (UTF-8) to ``path`` completely or not at all.

    A write that fails half-way (disk full) is cut back with ``ftruncate`` to the size the file
    had, so the log never ends in a torn line; a file this call created is removed again. Not
    fsynced (one call per log event). The cut-back assumes no other process appends to the same
    file at that moment (one run holds a dataset's lock). OSErrors become ``WriteError``.
    """
    path = Path(path)
    data = text.encode("utf-8")
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd, created = os.open(path, flags | os.O_EXCL, 0o666), True
        except FileExistsError:
            fd, created = os.open(path, flags, 0o666), False
    except OSError as error:
        raise _as_write_error(error, path) from error
    try:
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, data)
        except BaseException:
            with contextlib.suppress(OSError):
                if created:
                    os.unlink(path)
                else:
                    os.ftruncate(fd, size)
            raise
    except OSError as error:
        raise _as_write_error(error, path) from error
    finally:
        os.close(fd)

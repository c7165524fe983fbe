"""Tell from the HDF5 superblock alone whether a file on disk is still incomplete.

A file being copied already carries its final superblock at the start, so the end-of-file address
it declares is larger than the bytes on disk until the copy finishes. Reading it costs one small
read and no h5py, so the sensor can skip such a file instead of launching a run that fails with
HDF5's "truncated file" error.

Layout from the HDF5 File Format Specification, section II.A (superblock versions 0-3). The
stored end-of-file address is absolute: the library writes ``relative EOA + base address`` and
base address is the superblock's own offset (the user-block size). When the superblock is found
somewhere other than its stored base address (bytes were prepended or removed in front of it),
the library shifts the stored EOF by the same distance; ``declared_end_of_file`` does the same
(``H5F__super_read`` in H5Fsuper.c).
"""

from __future__ import annotations

import os
from pathlib import Path

SIGNATURE = b"\x89HDF\r\n\x1a\n"
_FIRST_USER_BLOCK = 512  # the signature sits at 0, 512, 1024, 2048, ... (spec II.A)
_VALID_SIZES = (2, 4, 8, 16)


def _superblock_offsets(size: int):
    """Offsets where the spec allows the signature: 0, then powers of two from 512."""
    offset = 0
    while offset + len(SIGNATURE) <= size:
        yield offset
        offset = _FIRST_USER_BLOCK if offset == 0 else offset * 2


def declared_end_of_file(path: Path) -> int | None:
    """The absolute file size the superblock says the complete file has.

    None when the file has no HDF5 signature, is too short to hold the whole superblock, has an
    unknown superblock version or sizes, or declares the undefined address (all 0xff bytes):
    then nothing can be said, and the caller should fall back to its other checks.
    """
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            for offset in _superblock_offsets(size):
                fh.seek(offset)
                if fh.read(len(SIGNATURE)) == SIGNATURE:
                    # fixed part + four addresses of at most 16 bytes: 28 + 4 * 16 = 92
                    return _end_of_file(fh.read(92 - len(SIGNATURE)), offset)
    except OSError:
        return None
    return None


def _end_of_file(body: bytes, superblock_offset: int) -> int | None:
    """Decode base and end-of-file addresses from the bytes after the signature."""
    if not body:
        return None
    version = body[0]
    if version in (0, 1):
        # version, free-space v., root-entry v., reserved, shared-header v., offsets, lengths,
        # reserved, group leaf K (2), group internal K (2), flags (4); v1 adds istore K + reserved
        if len(body) < 6:
            return None
        offset_size = body[5]
        start = 16 + (4 if version == 1 else 0)
        eof_index = 2  # base address, global free-space index, end of file
    elif version in (2, 3):
        # version, offsets, lengths, flags; base, superblock extension, end of file, root header
        if len(body) < 2:
            return None
        offset_size = body[1]
        start = 4
        eof_index = 2
    else:
        return None
    if offset_size not in _VALID_SIZES:
        return None
    end = start + (eof_index + 1) * offset_size
    if len(body) < end:
        return None
    base = int.from_bytes(body[start : start + offset_size], "little")
    eof_bytes = body[start + eof_index * offset_size : end]
    if eof_bytes == b"\xff" * offset_size or base == (1 << 8 * offset_size) - 1:
        return None
    # Stored EOF is absolute for a superblock at its base address; a moved superblock moves it.
    return int.from_bytes(eof_bytes, "little") + superblock_offset - base


def incomplete_reason(path: Path) -> str | None:
    """A one-line reason when the file is shorter than its superblock declares, else None.

    Only a file that is short is reported: extra bytes after the declared end are harmless to
    HDF5, and a file whose superblock cannot be read is left to the other checks.
    """
    path = Path(path)
    eof = declared_end_of_file(path)
    if eof is None:
        return None
    try:
        size = path.stat().st_size
    except OSError:
        return None
    if eof <= size:
        return None
    return f"{path.name} is incomplete: its HDF5 superblock declares {eof:,} bytes, the file has {size:,}"

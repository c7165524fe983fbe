"""Dataset names: the sanitized stem of the h5ad file, safe as a folder name and a partition key.
Imports nothing heavy, so the CLI can name datasets without loading Dagster."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_UNDERSCORES = re.compile(r"_+")
MAX_NAME_LENGTH = 200
"""Folder names carry the dataset name plus a short prefix/suffix and must stay under 255 bytes."""


def sanitize_name(stem: str) -> str:
    """``my dataset`` -> ``my_dataset``, ``dataset@special`` -> ``dataset_special``.

    Every character outside ``[A-Za-z0-9._-]`` becomes ``_``, runs of ``_`` collapse, and
    leading/trailing ``_`` go. The result is also safe as a folder name ("." and ".." refused); a
    name longer than 200 characters keeps its first 191 and gets ``_`` plus 8 hex digits of its
    sha1, so long names stay distinct.
    """
    name = _UNDERSCORES.sub("_", _UNSAFE.sub("_", stem)).strip("_")
    if not name or set(name) <= {"."}:
        raise ValueError(f"the name {stem!r} has no usable characters for a dataset name")
    if len(name) > MAX_NAME_LENGTH:
        name = f"{name[:MAX_NAME_LENGTH - 9]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


def dataset_name(path: str | Path) -> str:
    """The partition key of an h5ad file: its sanitized stem."""
    return sanitize_name(Path(path).stem)

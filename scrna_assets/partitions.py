"""Datasets are dynamic partitions keyed by the sanitized file name."""

from __future__ import annotations

import re
from pathlib import Path

from dagster import DynamicPartitionsDefinition

DATASETS_PARTITIONS_NAME = "datasets"
datasets_partitions = DynamicPartitionsDefinition(name=DATASETS_PARTITIONS_NAME)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_UNDERSCORES = re.compile(r"_+")


def sanitize_name(stem: str) -> str:
    """``my dataset`` -> ``my_dataset``, ``dataset@special`` -> ``dataset_special``.

    Every character outside ``[A-Za-z0-9._-]`` becomes ``_``, runs of ``_`` collapse, and
    leading/trailing ``_`` go. The result is also safe as a folder name ("." and ".." refused).
    """
    name = _UNDERSCORES.sub("_", _UNSAFE.sub("_", stem)).strip("_")
    if not name or set(name) <= {"."}:
        raise ValueError(f"the name {stem!r} has no usable characters for a dataset name")
    return name


def dataset_name(path: str | Path) -> str:
    """The partition key of an h5ad file: its sanitized stem."""
    return sanitize_name(Path(path).stem)

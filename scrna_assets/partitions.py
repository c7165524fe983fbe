"""Datasets are dynamic partitions keyed by the sanitized file name (``dataset_names``)."""

from __future__ import annotations

from dagster import DynamicPartitionsDefinition

DATASETS_PARTITIONS_NAME = "datasets"
datasets_partitions = DynamicPartitionsDefinition(name=DATASETS_PARTITIONS_NAME)

"""The steps, named once: asset, step number, CLI command, title and the folder each writes.

The runner, the jobs, the definitions, the folder layout and the CLI derive what they need from
this table; asset keys are these constants. Imports nothing, so the CLI starts at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

HGNC_MAPPER = "hgnc_mapper"
PARQUET_CHUNKS = "parquet_chunks"
AGED_CHUNKS = "aged_chunks"
TRAIN_TEST_SPLITS = "train_test_splits"
HF_UPLOAD = "hf_upload"


@dataclass(frozen=True)
class Step:
    number: int
    asset: str
    command: str
    title: str
    writes: Literal["interim", "output", "hub"]
    partitioned: bool = True
    checked: bool = False
    """Its output has the asset checks; the blocking ones gate the next step."""


STEPS = (
    Step(1, HGNC_MAPPER, "step1-hgnc-mapper", "Loading the HGNC gene mapping", "interim", partitioned=False),
    Step(2, PARQUET_CHUNKS, "step2-convert-h5ad", "Converting h5ad to parquet chunks of cell sentences", "interim"),
    Step(3, AGED_CHUNKS, "step3-add-age", "Adding donor age from development_stage", "interim"),
    Step(4, TRAIN_TEST_SPLITS, "step4-train-test-split", "Splitting into train and test", "output", checked=True),
    Step(5, HF_UPLOAD, "step5-upload", "Uploading to the HuggingFace Hub", "hub"),
)
BY_NUMBER = {step.number: step for step in STEPS}
DATASET_STEPS = tuple(step.number for step in STEPS if step.partitioned)
PARTITIONED_ASSETS = tuple(step.asset for step in STEPS if step.partitioned)
INTERIM_ASSETS = tuple(step.asset for step in STEPS if step.partitioned and step.writes == "interim")
OUTPUT_ASSET = next(step.asset for step in STEPS if step.writes == "output")
CHECKED_ASSET = next(step.asset for step in STEPS if step.checked)

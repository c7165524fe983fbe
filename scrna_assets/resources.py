"""Pipeline settings: folder roots and parameters, shared by the assets, the IO manager and the CLI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from dagster import ConfigurableResource

from scrna_assets.core.h5ad_reader import MATRIX_CHOICES
from scrna_assets.core.parquet_io import PARQUET_CODECS
from scrna_assets.core.sentences import TIE_BREAKS
from scrna_assets.core.split import SPLIT_MODES

ENV_PREFIX = "SCRNA_"


class PipelineSettings(ConfigurableResource):
    """Everything a run needs to know. Roots are absolute paths so no step depends on the cwd."""

    input_dir: str
    interim_dir: str
    output_dir: str
    log_dir: str
    chunk_size: int = 10_000
    top_genes: int = 2000
    compression: str = "zstd"
    test_size: float = 0.05
    seed: int = 42
    split_by: str = "auto"
    tie_break: str = "random"
    include_age_ranges: bool = False
    primary_only: bool = False
    license: str = "other"
    """The dataset card's license when the source does not fix it (CELLxGENE files are CC BY 4.0)."""
    matrix: str = "auto"
    hgnc_file: Optional[str] = None
    offline: bool = False
    skip_train_test_split: bool = False
    keep_interim: bool = False
    repo_id: Optional[str] = None
    repo_per_dataset: bool = False
    """Upload each dataset to ``<repo_id>-<name>`` (batch mode) instead of ``repo_id`` itself."""
    private: bool = True

    def problems(self) -> list[str]:
        """Every invalid setting, as messages for the user (empty when all is well)."""
        found = []
        if self.chunk_size < 1:
            found.append(f"--chunk-size must be >= 1 (got {self.chunk_size})")
        if self.top_genes < 0:
            found.append(f"--top-genes must be >= 0, 0 meaning all genes (got {self.top_genes})")
        if not 0 < self.test_size < 1:
            found.append(f"--test-size must be between 0 and 1, exclusive (got {self.test_size})")
        if self.compression not in PARQUET_CODECS:
            found.append(f"--compression must be one of {', '.join(PARQUET_CODECS)} (got {self.compression!r})")
        if self.split_by not in SPLIT_MODES:
            found.append(f"--split-by must be one of {', '.join(SPLIT_MODES)} (got {self.split_by!r})")
        if self.tie_break not in TIE_BREAKS:
            found.append(f"--tie-break must be one of {', '.join(TIE_BREAKS)} (got {self.tie_break!r})")
        if not self.license.strip():
            found.append("--license must not be empty")
        if self.matrix not in MATRIX_CHOICES:
            found.append(f"--matrix must be one of {', '.join(MATRIX_CHOICES)} (got {self.matrix!r})")
        if self.hgnc_file and not Path(self.hgnc_file).is_file():
            found.append(f"--hgnc-file {self.hgnc_file}: no such file")
        return found

    @classmethod
    def from_env(cls, base: Path | None = None) -> PipelineSettings:
        """Settings for ``dagster dev``/``dagster job execute``: ``SCRNA_*`` variables, with roots
        defaulting to ``./data/...`` and ``./logs`` under ``SCRNA_HOME`` (else the current folder),
        resolved once to absolute paths."""
        env = os.environ
        home = Path(env.get(f"{ENV_PREFIX}HOME", base or Path.cwd())).resolve()

        def root(name: str, default: str) -> str:
            return str((home / env.get(f"{ENV_PREFIX}{name}", default)).resolve())

        def flag(name: str) -> bool:
            return env.get(f"{ENV_PREFIX}{name}", "").lower() in ("1", "true", "yes")

        return cls(
            input_dir=root("INPUT_DIR", "data/input"),
            interim_dir=root("INTERIM_DIR", "data/interim"),
            output_dir=root("OUTPUT_DIR", "data/output"),
            log_dir=root("LOG_DIR", "logs"),
            chunk_size=int(env.get(f"{ENV_PREFIX}CHUNK_SIZE", 10_000)),
            top_genes=int(env.get(f"{ENV_PREFIX}TOP_GENES", 2000)),
            compression=env.get(f"{ENV_PREFIX}COMPRESSION", "zstd"),
            test_size=float(env.get(f"{ENV_PREFIX}TEST_SIZE", 0.05)),
            seed=int(env.get(f"{ENV_PREFIX}SEED", 42)),
            split_by=env.get(f"{ENV_PREFIX}SPLIT_BY", "auto"),
            tie_break=env.get(f"{ENV_PREFIX}TIE_BREAK", "random"),
            include_age_ranges=flag("INCLUDE_AGE_RANGES"),
            primary_only=flag("PRIMARY_ONLY"),
            license=env.get(f"{ENV_PREFIX}LICENSE", "other"),
            matrix=env.get(f"{ENV_PREFIX}MATRIX", "auto"),
            hgnc_file=env.get(f"{ENV_PREFIX}HGNC_FILE") or None,
            offline=flag("OFFLINE"),
            skip_train_test_split=flag("SKIP_TRAIN_TEST_SPLIT"),
            keep_interim=flag("KEEP_INTERIM"),
            repo_id=env.get(f"{ENV_PREFIX}REPO_ID") or None,
            repo_per_dataset=flag("REPO_PER_DATASET"),
            private=env.get(f"{ENV_PREFIX}PRIVATE", "true").lower() not in ("0", "false", "no"),
        )

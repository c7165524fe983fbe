"""Where every asset of every dataset lives on disk, and how a folder is published atomically.

Assets write into a staging folder beside the final one (same filesystem), and the IO manager
renames it into place, so readers never see half a dataset and stale chunks never survive.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from scrna_assets.dataset_lock import DatasetLock
from scrna_assets.dataset_names import sanitize_name
from scrna_assets.steps import HGNC_MAPPER, INTERIM_ASSETS, OUTPUT_ASSET

STAGING_PREFIX = ".staging-"
RETIRED_PREFIX = ".retired-"
# "+" never occurs in a sanitized dataset name, so "<name>+" can't match another dataset's folders.
_SEP = "+"


def _check_dataset(dataset: str) -> str:
    try:
        valid = sanitize_name(dataset) == dataset
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"{dataset!r} is not a dataset name (names are sanitized file names)")
    return dataset


@dataclass(frozen=True)
class DatasetLayout:
    interim_dir: Path
    output_dir: Path
    log_dir: Path

    @classmethod
    def from_roots(cls, interim_dir: str, output_dir: str, log_dir: str) -> DatasetLayout:
        return cls(Path(interim_dir), Path(output_dir), Path(log_dir))

    # -- final locations --------------------------------------------------------------------
    def asset_dir(self, asset: str, dataset: str) -> Path:
        """The folder an asset publishes for one dataset; chunk files sit in its ``chunks/``.

        Only sanitized names are accepted, so no partition key can point outside the roots."""
        _check_dataset(dataset)
        if asset in INTERIM_ASSETS:
            return self.interim_dir / asset / dataset
        if asset == OUTPUT_ASSET:
            return self.output_dir / dataset
        raise KeyError(f"no folder layout for asset {asset!r}")

    def hgnc_dir(self) -> Path:
        return self.interim_dir / HGNC_MAPPER

    def hgnc_mapping_file(self) -> Path:
        return self.hgnc_dir() / "hgnc_mapping.parquet"

    def hgnc_download_cache(self) -> Path:
        return self.hgnc_dir() / "hgnc_complete_set.txt"

    def upload_record(self, dataset: str) -> Path:
        return self.output_dir / dataset / "hf_upload.json"

    def dataset_log_dir(self, dataset: str) -> Path:
        _check_dataset(dataset)
        return self.log_dir / dataset

    def lock_file(self, dataset: str) -> Path:
        return self.interim_dir / ".locks" / f"{_check_dataset(dataset)}.lock"

    def lock(self, dataset: str, run_id: str = "") -> DatasetLock:
        """The dataset's lock: every write and deletion of its folders happens while it is held."""
        return DatasetLock(self.lock_file(dataset), dataset, run_id)

    def _require_lock(self, dataset: str) -> None:
        if not self.lock(dataset).held_here:
            raise RuntimeError(f"{dataset!r}: folders are only changed by the run that holds the dataset's lock")

    # -- staging and publication ---------------------------------------------------------------
    def _staging_parent(self, asset: str, dataset: str) -> Path:
        return self.asset_dir(asset, dataset).parent

    def clear_stale_staging(self, asset: str, dataset: str) -> list[Path]:
        """Remove staging folders left by a crashed run of this asset and dataset."""
        self._require_lock(dataset)
        parent = self._staging_parent(asset, dataset)
        patterns = (f"{STAGING_PREFIX}{dataset}{_SEP}*", f"{RETIRED_PREFIX}{dataset}{_SEP}*")
        stale = sorted(p for pattern in patterns for p in parent.glob(pattern)) if parent.exists() else []
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
        return stale

    @contextmanager
    def staging(self, asset: str, dataset: str) -> Iterator[Path]:
        """A fresh staging folder; deleted if the body raises, kept for ``publish`` otherwise."""
        parent = self._staging_parent(asset, dataset)
        parent.mkdir(parents=True, exist_ok=True)
        path = parent / f"{STAGING_PREFIX}{dataset}{_SEP}{uuid.uuid4().hex[:12]}"
        path.mkdir()
        try:
            yield path
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise

    def remove_dataset(self, dataset: str, assets: tuple[str, ...] = (*INTERIM_ASSETS, OUTPUT_ASSET)) -> list[Path]:
        """Delete this dataset's folders of the given assets (and their staging); nothing else."""
        self._require_lock(dataset)
        removed = []
        for asset in assets:
            self.clear_stale_staging(asset, dataset)
            folder = self.asset_dir(asset, dataset)
            if folder.exists():
                shutil.rmtree(folder)
                removed.append(folder)
        return removed


    def publish(self, staging: Path, asset: str, dataset: str) -> Path:
        """Replace the asset's folder with ``staging`` by renames: the old folder goes aside, then away."""
        self._require_lock(dataset)
        final = self.asset_dir(asset, dataset)
        _replace_folder(staging, final)
        return final


def _replace_folder(staging: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    retired = final.with_name(f"{RETIRED_PREFIX}{final.name}{_SEP}{uuid.uuid4().hex[:12]}")
    if final.exists():
        os.replace(final, retired)
    os.replace(staging, final)
    shutil.rmtree(retired, ignore_errors=True)

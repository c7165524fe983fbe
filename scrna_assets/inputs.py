"""Find the h5ad file behind a dataset name, refusing names that two files share."""

from __future__ import annotations

from pathlib import Path

from scrna_assets.core.errors import InputError
from scrna_assets.partitions import dataset_name


def h5ad_files(folder: Path) -> list[Path]:
    """``*.h5ad`` files directly in ``folder`` (extension in any case), sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".h5ad")


def find_dataset_file(input_dir: Path, dataset: str) -> Path:
    matches = []
    for path in h5ad_files(input_dir):
        try:
            if dataset_name(path) == dataset:
                matches.append(path)
        except ValueError:
            continue
    if not matches:
        raise InputError(input_dir / f"{dataset}.h5ad", f"no h5ad file in {input_dir} has the dataset name {dataset!r}")
    if len(matches) > 1:
        raise InputError(
            matches[0], f"dataset name {dataset!r} is shared by {', '.join(p.name for p in matches)}; rename one"
        )
    return matches[0]

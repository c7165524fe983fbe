"""Find the h5ad file behind a dataset name, refusing names that two files share."""

from __future__ import annotations

import os
from pathlib import Path

from scrna_assets.core.errors import InputError
from scrna_assets.dataset_names import dataset_name


def h5ad_files(folder: Path) -> list[Path]:
    """``*.h5ad`` files directly in ``folder`` (extension in any case), sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".h5ad")


def find_dataset_file(input_dir: Path, dataset: str) -> Path:
    """The one file in ``input_dir`` whose sanitized name is ``dataset``."""
    unique, errors = datasets_by_name(h5ad_files(input_dir))
    if dataset in unique:
        return unique[dataset]
    for error in errors:
        if f"dataset name {dataset!r}" in error.problem:
            raise error
    raise InputError(input_dir / f"{dataset}.h5ad", f"no h5ad file in {input_dir} has the dataset name {dataset!r}")


def datasets_by_name(files: list[Path]) -> tuple[dict[str, Path], list[InputError]]:
    """Dataset name -> file for files whose names are usable and unique; an error for each other
    file. Two files with the same sanitized name are both refused, so neither overwrites the other."""
    groups: dict[str, list[Path]] = {}
    errors: list[InputError] = []
    for path in files:
        try:
            groups.setdefault(dataset_name(path), []).append(path)
        except ValueError as error:
            errors.append(InputError(path, str(error)))
    unique = {name: group[0] for name, group in groups.items() if len(group) == 1}
    for name, group in groups.items():
        if len(group) > 1:
            listed = ", ".join(p.name for p in group)
            errors += [InputError(p, f"dataset name {name!r} is shared by {listed}; rename one") for p in group]
    return unique, errors


def readable_input(path: Path) -> Path:
    """``path`` when it is a file this process can read; else one clear ``InputError`` (a dangling
    symbolic link, a file that vanished, a folder, a file without read permission)."""
    if path.is_symlink() and not path.exists():
        raise InputError(path, f"is a symbolic link to {os.readlink(path)}, which does not exist")
    if not path.exists():
        raise InputError(path, "does not exist (moved or deleted after it was listed)")
    if path.is_dir():
        raise InputError(path, "is a directory, not an h5ad file")
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise InputError(path, f"cannot be read ({error.strerror})") from None
    return path

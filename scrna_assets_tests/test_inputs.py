"""Finding input files: extension case, sanitized names and collisions."""

from pathlib import Path

import pytest

from scrna_assets.core.errors import InputError
from scrna_assets.inputs import datasets_by_name, find_dataset_file, h5ad_files


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_h5ad_files_any_case_sorted_others_ignored(tmp_path: Path) -> None:
    touch(tmp_path, "b.h5ad", "A.H5AD", "notes.txt", "c.h5ad.part")
    assert [p.name for p in h5ad_files(tmp_path)] == ["A.H5AD", "b.h5ad"]
    assert h5ad_files(tmp_path / "missing") == []


def test_colliding_names_are_both_refused(tmp_path: Path) -> None:
    touch(tmp_path, "a b.h5ad", "a_b.h5ad", "ok.h5ad", "@@.h5ad")
    unique, errors = datasets_by_name(h5ad_files(tmp_path))
    assert unique == {"ok": tmp_path / "ok.h5ad"}
    assert [str(e) for e in errors] == [
        f"{tmp_path / '@@.h5ad'}: the name '@@' has no usable characters for a dataset name",
        f"{tmp_path / 'a b.h5ad'}: dataset name 'a_b' is shared by a b.h5ad, a_b.h5ad; rename one",
        f"{tmp_path / 'a_b.h5ad'}: dataset name 'a_b' is shared by a b.h5ad, a_b.h5ad; rename one",
    ]


def test_find_dataset_file(tmp_path: Path) -> None:
    touch(tmp_path, "my dataset.h5ad", "a b.h5ad", "a_b.h5ad")
    assert find_dataset_file(tmp_path, "my_dataset") == tmp_path / "my dataset.h5ad"
    with pytest.raises(InputError, match="shared by a b.h5ad, a_b.h5ad"):
        find_dataset_file(tmp_path, "a_b")
    with pytest.raises(InputError, match="no h5ad file in .* has the dataset name 'nothing'"):
        find_dataset_file(tmp_path, "nothing")

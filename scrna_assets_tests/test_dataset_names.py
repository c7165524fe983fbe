"""Dataset names: the sanitizing rule of the partition keys."""

import pytest

from scrna_assets.dataset_names import dataset_name, sanitize_name


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("my dataset", "my_dataset"),
        ("dataset@special", "dataset_special"),
        ("a  b", "a_b"),
        ("__lead and trail__", "lead_and_trail"),
        ("keep.dots-and_dashes", "keep.dots-and_dashes"),
        ("Zellen_ß_Ärzte", "Zellen_rzte"),
        ("a@@@b", "a_b"),
    ],
)
def test_sanitize_name(stem: str, expected: str) -> None:
    assert sanitize_name(stem) == expected


@pytest.mark.parametrize("stem", ["", "@@@", "___", " ", ".", ".."])
def test_sanitize_name_refuses_names_with_nothing_left(stem: str) -> None:
    with pytest.raises(ValueError, match="no usable characters"):
        sanitize_name(stem)


def test_dataset_name_uses_the_file_stem() -> None:
    assert dataset_name("/data/in/my dataset.h5ad") == "my_dataset"
    assert dataset_name("dataset@special.H5AD") == "dataset_special"

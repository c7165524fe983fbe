"""hdf5_superblock: the declared end of file of files written by h5py / anndata (the HDF5 library
itself) equals their size; a short copy is reported, a padded or unreadable one is not."""

from __future__ import annotations

import ctypes
import warnings
from pathlib import Path

import anndata
import h5py
import numpy as np
import pytest

from scrna_assets.core.hdf5_superblock import declared_end_of_file, incomplete_reason

# libver -> superblock version byte the HDF5 library writes (h5py 3.16 / HDF5 2.0)
LIBVERS = [("earliest", 0), (("v108", "v108"), 2), ("v110", 3), ("latest", 3)]
USER_BLOCKS = [0, 512, 1024]


def _h5py_file(path: Path, libver=None, userblock_size: int = 0) -> Path:
    kwargs = {} if libver is None else {"libver": libver}
    with h5py.File(path, "w", userblock_size=userblock_size, **kwargs) as f:
        f["x"] = np.arange(1000)
        f["g/y"] = np.linspace(0, 1, 300)
    return path


def _copy(dst: Path, data: bytes) -> Path:
    dst.write_bytes(data)
    return dst


def _opens(path: Path) -> bool:
    try:
        with h5py.File(path, "r"):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("userblock", USER_BLOCKS)
@pytest.mark.parametrize(("libver", "version"), LIBVERS, ids=lambda v: str(v))
def test_complete_h5py_file_declares_its_size(tmp_path, libver, version, userblock):
    path = _h5py_file(tmp_path / "f.h5", libver, userblock)
    data = path.read_bytes()
    assert data[userblock : userblock + 8] == b"\x89HDF\r\n\x1a\n"
    assert data[userblock + 8] == version
    assert declared_end_of_file(path) == len(data)
    assert incomplete_reason(path) is None


def _hdf5_library() -> ctypes.CDLL | None:
    """The libhdf5 h5py loaded, to call H5Pset_istore_k (h5py does not wrap it)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            if "libhdf5" in line and "_hl" not in line and ".so" in line:
                return ctypes.CDLL(line.split()[-1])
    return None


@pytest.mark.parametrize("userblock", USER_BLOCKS)
def test_superblock_version_1(tmp_path, userblock):
    """A non-default indexed-storage K makes the library write superblock version 1."""
    lib = _hdf5_library() if Path("/proc/self/maps").exists() else None
    if lib is None:
        pytest.skip("libhdf5 not found among the loaded libraries")
    lib.H5Pset_istore_k.argtypes = [ctypes.c_int64, ctypes.c_uint]
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    assert lib.H5Pset_istore_k(fcpl.id, 64) >= 0
    fcpl.set_userblock(userblock)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_LATEST)
    path = tmp_path / "v1.h5"
    with h5py.File(h5py.h5f.create(bytes(path), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl)) as f:
        f["x"] = np.arange(1000)
    data = path.read_bytes()
    assert data[userblock + 8] == 1
    assert declared_end_of_file(path) == len(data)
    half = _copy(tmp_path / "half.h5", data[: len(data) // 2])
    assert incomplete_reason(half) == (
        f"half.h5 is incomplete: its HDF5 superblock declares {len(data):,} bytes, "
        f"the file has {len(data) // 2:,}"
    )


def test_anndata_file_declares_its_size(tmp_path):
    adata = anndata.AnnData(X=np.arange(60, dtype=np.float32).reshape(6, 10))
    path = tmp_path / "a.h5ad"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_h5ad(path)
    assert declared_end_of_file(path) == path.stat().st_size
    assert incomplete_reason(path) is None


@pytest.mark.parametrize("userblock", USER_BLOCKS)
@pytest.mark.parametrize(("libver", "version"), LIBVERS, ids=lambda v: str(v))
def test_truncated_copy_is_incomplete(tmp_path, libver, version, userblock):
    full = _h5py_file(tmp_path / "full.h5", libver, userblock).read_bytes()
    half = _copy(tmp_path / "half.h5", full[: len(full) // 2])
    assert not _opens(half)  # HDF5 itself calls it truncated
    assert declared_end_of_file(half) == len(full)
    assert incomplete_reason(half) == (
        f"half.h5 is incomplete: its HDF5 superblock declares {len(full):,} bytes, "
        f"the file has {len(full) // 2:,}"
    )


def test_truncated_anndata_copy_is_incomplete(tmp_path):
    adata = anndata.AnnData(X=np.ones((50, 40), dtype=np.float32))
    src = tmp_path / "a.h5ad"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_h5ad(src)
    full = src.read_bytes()
    short = _copy(tmp_path / "short.h5ad", full[: len(full) - 1])
    assert incomplete_reason(short) == (
        f"short.h5ad is incomplete: its HDF5 superblock declares {len(full):,} bytes, "
        f"the file has {len(full) - 1:,}"
    )


def test_padded_file_is_complete(tmp_path):
    full = _h5py_file(tmp_path / "full.h5", "latest").read_bytes()
    padded = _copy(tmp_path / "padded.h5", full + b"\0" * 4096)
    assert declared_end_of_file(padded) == len(full)
    assert incomplete_reason(padded) is None
    assert _opens(padded)


@pytest.mark.parametrize("libver", ["earliest", "latest"])
def test_superblock_moved_behind_prepended_bytes(tmp_path, libver):
    """Base address 0 but the superblock at 512: HDF5 shifts the stored EOF by 512 as well."""
    full = _h5py_file(tmp_path / "full.h5", libver).read_bytes()
    moved = _copy(tmp_path / "moved.h5", b"\0" * 512 + full)
    with h5py.File(moved, "r") as f:
        assert f.userblock_size == 512
        assert f["x"][-1] == 999
    assert declared_end_of_file(moved) == len(full) + 512
    cut = _copy(tmp_path / "cut.h5", (b"\0" * 512 + full)[:-1])
    assert not _opens(cut)
    assert incomplete_reason(cut) == (
        f"cut.h5 is incomplete: its HDF5 superblock declares {len(full) + 512:,} bytes, "
        f"the file has {len(full) + 511:,}"
    )


def test_not_hdf5_or_empty_is_undetermined(tmp_path):
    text = tmp_path / "notes.h5ad"
    text.write_text("cell_id,age\n" * 200)
    empty = tmp_path / "empty.h5ad"
    empty.write_bytes(b"")
    for path in (text, empty, tmp_path / "missing.h5ad"):
        assert declared_end_of_file(path) is None
        assert incomplete_reason(path) is None


@pytest.mark.parametrize(("libver", "cut_at"), [("earliest", 8), ("earliest", 40), ("latest", 9), ("latest", 35)])
def test_cut_inside_superblock_is_undetermined(tmp_path, libver, cut_at):
    # v0: EOF address ends at byte 48; v2/v3: at byte 44
    full = _h5py_file(tmp_path / "full.h5", libver).read_bytes()
    cut = _copy(tmp_path / "cut.h5", full[:cut_at])
    assert declared_end_of_file(cut) is None
    assert incomplete_reason(cut) is None


def test_undefined_end_of_file_address_is_undetermined(tmp_path):
    full = bytearray(_h5py_file(tmp_path / "full.h5", "earliest").read_bytes())
    full[40:48] = b"\xff" * 8  # v0, 8-byte offsets: EOF address at bytes 40..47
    patched = _copy(tmp_path / "undef.h5", bytes(full[:100]))
    assert declared_end_of_file(patched) is None
    assert incomplete_reason(patched) is None

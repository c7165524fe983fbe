"""Tests for ``scrna_assets.core.hgnc``: reading, downloading and choosing the HGNC table."""

from __future__ import annotations

import http.server
import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from scrna_assets.core import hgnc
from scrna_assets.core.hgnc import HGNC_URL, download_hgnc, read_hgnc_table, resolve_hgnc_mapping

# A miniature HGNC complete set: a duplicate Ensembl id (keep the first), a blank id, a padded id,
# and a name with a stray double quote (HGNC TSV is not quoted).
TSV_ROWS = [
    ("HGNC:11998", "TP53", 'tumor protein "p53', "ENSG00000141510"),
    ("HGNC:1100", "BRCA1", "BRCA1 DNA repair", "ENSG00000012048"),
    ("HGNC:22", "AAVS1", "safe harbor", ""),
    ("HGNC:31430", "LINC00595", "lncRNA 595", "ENSG00000230417"),
    ("HGNC:45111", "LINC00856", "lncRNA 856", "ENSG00000230417"),
    ("HGNC:132", "ACTB", "actin beta", " ENSG00000075624 "),
]
EXPECTED_ROWS = [
    ("ENSG00000012048", "BRCA1"),
    ("ENSG00000075624", "ACTB"),
    ("ENSG00000141510", "TP53"),
    ("ENSG00000230417", "LINC00595"),
]


def tsv_bytes(rows: list[tuple[str, str, str, str]] = TSV_ROWS) -> bytes:
    lines = ["hgnc_id\tsymbol\tname\tensembl_gene_id"] + ["\t".join(row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def write_tsv(path: Path, rows: list[tuple[str, str, str, str]] = TSV_ROWS) -> Path:
    path.write_bytes(tsv_bytes(rows))
    return path


def rows_of(table: pl.DataFrame) -> list[tuple[str, str]]:
    return [tuple(row) for row in table.iter_rows()]


def test_read_tsv(tmp_path: Path) -> None:
    """TSV: one row per Ensembl id (first wins), blanks dropped, padding stripped, sorted by id."""
    table = read_hgnc_table(write_tsv(tmp_path / "hgnc_complete_set.txt"))
    assert table.columns == ["ensembl_gene_id", "symbol"]
    assert table.dtypes == [pl.String, pl.String]
    assert rows_of(table) == EXPECTED_ROWS


def test_read_parquet(tmp_path: Path) -> None:
    """Parquet input gives the same mapping as the TSV it was made from (null id dropped too)."""
    frame = pl.DataFrame(
        {
            "hgnc_id": [r[0] for r in TSV_ROWS] + ["HGNC:9"],
            "symbol": [r[1] for r in TSV_ROWS] + ["NULLID"],
            "ensembl_gene_id": [r[3] for r in TSV_ROWS] + [None],
            "entrez_id": list(range(len(TSV_ROWS) + 1)),
        }
    )
    path = tmp_path / "hgnc.parquet"
    frame.write_parquet(path)
    table = read_hgnc_table(path)
    assert table.columns == ["ensembl_gene_id", "symbol"]
    assert rows_of(table) == EXPECTED_ROWS


def test_read_rejects_non_hgnc_file(tmp_path: Path) -> None:
    """A file without symbol/ensembl_gene_id must be rejected with the module's clear error."""
    path = tmp_path / "other.tsv"
    path.write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="not an HGNC complete set"):
        read_hgnc_table(path)


def test_read_real_hgnc_parquet(shared_data: Path) -> None:
    """The shipped HGNC set has 41,961 distinct Ensembl ids; spot-check symbols."""
    table = read_hgnc_table(shared_data / "hgnc" / "hgnc_complete_set.parquet")
    assert table.height == 41_961
    assert table["ensembl_gene_id"].n_unique() == 41_961
    assert table["ensembl_gene_id"].is_sorted()
    mapping = dict(zip(table["ensembl_gene_id"], table["symbol"]))
    assert mapping["ENSG00000141510"] == "TP53"
    assert mapping["ENSG00000012048"] == "BRCA1"
    assert mapping["ENSG00000230417"] == "LINC00595"  # shared id: first in file wins


# -- resolve_hgnc_mapping ----------------------------------------------------------------------


def _no_download(*args: object, **kwargs: object) -> Path:
    raise AssertionError("download_hgnc must not be called")


def test_resolve_explicit_file_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit --hgnc-file beats a cached copy and never downloads."""
    monkeypatch.setattr(hgnc, "download_hgnc", _no_download)
    explicit = write_tsv(tmp_path / "explicit.tsv")
    cache = write_tsv(tmp_path / "cache.tsv", [("HGNC:1", "OTHER", "x", "ENSG00000000001")])
    table, source, warning = resolve_hgnc_mapping(str(explicit), cache, offline=False)
    assert rows_of(table) == EXPECTED_ROWS
    assert source == f"file:{explicit}"
    assert warning is None


@pytest.mark.parametrize("offline", [True, False])
def test_resolve_uses_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: bool) -> None:
    """A cached download is used (online or offline) without downloading again."""
    monkeypatch.setattr(hgnc, "download_hgnc", _no_download)
    cache = write_tsv(tmp_path / "hgnc_complete_set.txt")
    table, source, warning = resolve_hgnc_mapping(None, cache, offline=offline)
    assert rows_of(table) == EXPECTED_ROWS
    assert source == f"cache:{cache}"
    assert warning is None


def test_resolve_offline_without_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline with no file and no cache: empty mapping plus a warning, no download attempt."""
    monkeypatch.setattr(hgnc, "download_hgnc", _no_download)
    table, source, warning = resolve_hgnc_mapping("", tmp_path / "cache.txt", offline=True)
    assert table.height == 0
    assert table.schema == pl.Schema({"ensembl_gene_id": pl.String, "symbol": pl.String})
    assert source == "none"
    assert warning is not None and "offline mode" in warning and "not mapped" in warning


def test_resolve_download_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed download is not fatal: empty mapping plus a warning naming the failure."""

    def fail(destination: Path, *args: object, **kwargs: object) -> Path:
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(hgnc, "download_hgnc", fail)
    cache = tmp_path / "cache.txt"
    table, source, warning = resolve_hgnc_mapping(None, cache, offline=False)
    assert table.height == 0
    assert table.columns == ["ensembl_gene_id", "symbol"]
    assert source == "none"
    assert warning is not None and "HGNC download failed" in warning and "no route to host" in warning
    assert not cache.exists()


def test_resolve_fresh_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Online with no cache: download into the cache path and read it."""
    calls: list[Path] = []

    def fake_download(destination: Path, *args: object, **kwargs: object) -> Path:
        calls.append(destination)
        return write_tsv(destination)

    monkeypatch.setattr(hgnc, "download_hgnc", fake_download)
    cache = tmp_path / "cache.txt"
    table, source, warning = resolve_hgnc_mapping(None, cache, offline=False)
    assert calls == [cache]
    assert rows_of(table) == EXPECTED_ROWS
    assert source == f"download:{HGNC_URL}"
    assert warning is None


# -- download_hgnc against a local HTTP server --------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        body = tsv_bytes()
        if self.path == "/hgnc.txt":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/truncated.txt":  # promises more bytes than it sends, then hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 1000))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    """A local HTTP server on 127.0.0.1 (no network needed)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_success(tmp_path: Path, http_base: str) -> None:
    """The file arrives byte for byte, parent folders are created, no temp file remains."""
    destination = tmp_path / "nested" / "hgnc.txt"
    assert download_hgnc(destination, url=f"{http_base}/hgnc.txt", timeout=5) == destination
    assert destination.read_bytes() == tsv_bytes()
    assert sorted(p.name for p in destination.parent.iterdir()) == ["hgnc.txt"]
    assert rows_of(read_hgnc_table(destination)) == EXPECTED_ROWS


def test_download_http_error_leaves_nothing(tmp_path: Path, http_base: str) -> None:
    """A 404 raises URLError and leaves neither the destination nor a partial file."""
    destination = tmp_path / "hgnc.txt"
    with pytest.raises(urllib.error.URLError):
        download_hgnc(destination, url=f"{http_base}/missing", timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_download_failure_keeps_previous_file(tmp_path: Path, http_base: str) -> None:
    """Atomic replace: a failed download does not touch an existing destination."""
    destination = tmp_path / "hgnc.txt"
    destination.write_bytes(b"old")
    with pytest.raises(urllib.error.URLError):
        download_hgnc(destination, url=f"{http_base}/missing", timeout=5)
    assert destination.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["hgnc.txt"]


def test_download_truncated_body_is_a_failure(tmp_path: Path, http_base: str) -> None:
    """A connection that drops before Content-Length bytes must not leave a (partial) file."""
    destination = tmp_path / "hgnc.txt"
    with pytest.raises(Exception):
        download_hgnc(destination, url=f"{http_base}/truncated.txt", timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_resolve_truncated_download(tmp_path: Path, http_base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: a dropped download is a download failure (empty + warning, no cache file)."""
    real_download = download_hgnc

    def local_download(destination: Path, *args: object, **kwargs: object) -> Path:
        return real_download(destination, url=f"{http_base}/truncated.txt", timeout=5)

    monkeypatch.setattr(hgnc, "download_hgnc", local_download)
    cache = tmp_path / "cache.txt"
    table, source, warning = resolve_hgnc_mapping(None, cache, offline=False)
    assert (table.height, source) == (0, "none")
    assert warning is not None and "HGNC download failed" in warning
    assert not cache.exists()


# -- download_hgnc onto a full disk (a 64 KiB tmpfs) ----------------------------------------------

FULL_DISK_CHILD = """
import json, sys
from pathlib import Path
from scrna_assets.core.atomic_files import WriteError
from scrna_assets.core.hgnc import download_hgnc

folder, url = Path(sys.argv[1]), sys.argv[2]
cache = folder / "hgnc_complete_set.txt"
cache.write_text("old cache\\n")
try:
    download_hgnc(cache, url=url, timeout=5)
    report = {"raised": None}
except WriteError as error:
    report = {"raised": str(error)}
report["files"] = sorted(p.name for p in folder.iterdir())
report["cache"] = cache.read_text()
print(json.dumps(report))
"""


def test_download_onto_full_disk_keeps_previous_cache(tmp_path: Path) -> None:
    """A 200 kB download into 64 KiB: a WriteError naming the folder, no temp file, old cache untouched."""
    from scrna_assets_tests.disk_full import SKIP_REASON, disk_full_supported, run_python_on_small_tmpfs

    if not disk_full_supported():
        pytest.skip(SKIP_REASON)
    rows = [(f"HGNC:{i}", f"G{i}", "a gene name long enough to fill the disk", f"ENSG{i:011d}") for i in range(2500)]
    source = tmp_path / "source.txt"
    source.write_bytes(tsv_bytes(rows))
    assert len(tsv_bytes(rows)) > 150_000
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    report = run_python_on_small_tmpfs(cache_dir, 64, FULL_DISK_CHILD, source.as_uri())
    assert report == {
        "raised": f"no space left in {cache_dir} (the disk or quota is full)",
        "files": ["hgnc_complete_set.txt"],
        "cache": "old cache\n",
    }

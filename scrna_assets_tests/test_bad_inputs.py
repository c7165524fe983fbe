"""Every kind of bad input in one batch, as a weekend run would meet them: each gets the outcome
the contract says, the batch goes on, nothing partial is left and no input changes."""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scrna_assets.cli import app
from scrna_assets.dataset_names import sanitize_name
from scrna_assets_tests.bad_input_corpus import CASES, Case, render_table

AS_ROOT = os.geteuid() == 0
ACTIVE = [c for c in CASES if not (AS_ROOT and c.file_name == "unreadable.h5ad")]


def fingerprint(folder: Path) -> dict[str, str]:
    """Content hash of every input, following symlinks and looking into directories."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest() if os.access(path, os.R_OK) else "unreadable"
    return found


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("corpus")
    folder = root / "incoming"
    folder.mkdir()
    for case in ACTIVE:
        case.build(folder / case.file_name)
    before = fingerprint(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for name in ("DAGSTER_HOME", "HF_TOKEN", "SCRNA_HGNC_FILE"):
            patch.delenv(name, raising=False)
        result = CliRunner().invoke(app, ["run-all", str(folder), "--batch-mode", "--offline"])
        os.environ.pop("DAGSTER_HOME", None)
    rows = {Path(r["input_file"]).name: r for r in csv.DictReader((root / "logs/batch_summary.tsv").open(), delimiter="\t")}
    yield root, folder, result, rows, before
    for case in ACTIVE:
        if case.file_name == "unreadable.h5ad":
            (folder / case.file_name).chmod(0o644)


def test_the_corpus_has_at_least_twenty_kinds() -> None:
    assert len({c.kind.split(" (")[0] for c in CASES}) >= 20


def test_the_batch_finishes_and_reports_failures(batch) -> None:
    _, _, result, rows, _ = batch
    assert result.exit_code == 1
    assert sorted(rows) == sorted(c.file_name for c in ACTIVE)
    assert "Traceback" not in result.output


@pytest.mark.parametrize("case", CASES, ids=[c.file_name[:40] for c in CASES])
def test_each_kind_gets_its_outcome(batch, case: Case) -> None:
    if AS_ROOT and case.file_name == "unreadable.h5ad":
        pytest.skip("running as root, which reads any file whatever its permissions")
    root, folder, _, rows, _ = batch
    row = rows[case.file_name]
    path = folder / case.file_name
    if case.refused:
        assert row["status"] == "FAILED"
        assert case.refused in row["message"]
        if row["message"].startswith("step"):
            assert f"{path}: " in row["message"]  # the message names the file
        try:
            name = sanitize_name(Path(case.file_name).stem)
        except ValueError:
            return
        assert not (root / "data/output" / name).exists()
    else:
        assert row["status"] == "SUCCESS", row["message"]
        assert (int(row["cells_read"]), int(row["cells_with_age"])) == (case.cells, case.with_age)
        name = sanitize_name(Path(case.file_name).stem)
        output = root / "data/output" / name
        assert (output / "train" / "chunks").is_dir() and (output / "provenance.json").is_file()


def test_nothing_partial_is_left_and_inputs_are_untouched(batch) -> None:
    root, folder, _, _, before = batch
    assert fingerprint(folder) == before
    leftovers = [p for p in (root / "data").rglob("*") if p.name.startswith((".staging-", ".retired-"))]
    assert leftovers == []
    for asset in ("parquet_chunks", "aged_chunks"):
        assert list((root / "data/interim" / asset).iterdir()) == []


def test_the_docs_table_is_generated_from_the_corpus() -> None:
    assert (Path(__file__).parents[1] / "docs" / "bad_inputs.md").read_text() == render_table()


def test_a_gene_listed_twice_is_one_gene_with_the_summed_value(batch) -> None:
    """Row 5 stores GENE2 twice (2 and 3) and GENE4 (7): as scipy/anndata sum them, GENE2 is 5."""
    import pyarrow.parquet as pq

    root, _, _, rows, _ = batch
    assert rows["repeated_gene.h5ad"]["status"] == "SUCCESS"
    cells = {}
    for path in sorted((root / "data/output/repeated_gene").glob("*/chunks/*.parquet")):
        table = pq.read_table(path, columns=["cell_id", "cell_sentence"])
        cells.update(zip(table.column("cell_id").to_pylist(), table.column("cell_sentence").to_pylist()))
    assert cells["cell5"] == "GENE4 GENE2"

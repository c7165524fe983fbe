"""Upload tests against a local stand-in of the Hub (127.0.0.1 only), with the real huggingface_hub client.

They check what actually reaches the server: the repo and its private flag, the exact files and
their bytes, a card whose YAML ``configs`` the ``datasets`` library can load, the token only in the
Authorization header, and that failed or repeated uploads resume without sending objects again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from scrna_assets.core import hf_upload
from scrna_assets.core.hf_upload import (
    MAX_FILES_PER_COMMIT,
    HubUploadError,
    commit_batches,
    dataset_card,
    hub_token_available,
    upload_dataset,
)
from scrna_assets_tests.hub_server import TOKEN, LocalHub, hub_client_env

REPO = "ageing-lab/heart-cell-sentences"
PARQUET_PATHS = {
    "train/chunks/chunk_0000.parquet",
    "train/chunks/chunk_0001.parquet",
    "test/chunks/chunk_0000.parquet",
}
DETAILS: dict[str, Any] = {
    "input": {"path": "/private/data/input/heart_atlas.h5ad", "size": 123_456, "mtime_ns": 1},
    "parameters": {
        "top_genes": 2048, "chunk_size": 5, "compression": "zstd", "matrix": "X",
        "test_size": 0.25, "seed": 42, "split_by": "donor", "tie_break": "position",
    },
    "figures": {
        "cells": 15, "genes": 321, "cells_with_age": 12, "cells_without_age": 3,
        "split_by": "donor", "train_cells": 9, "test_cells": 3, "train_donors": 3, "test_donors": 1,
    },
}


def _chunk(path: Path, prefix: str, ages: list[float], donors: list[str]) -> None:
    n = len(ages)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "cell_id": [f"{prefix}{i}" for i in range(n)],
        "cell_sentence": ["MT-CO1 ACTB GAPDH"] * n,
        "n_genes": pa.array([3] * n, pa.int32()),
        "age": pa.array(ages, pa.float64()),
        "donor_id": donors,
    }), path)


@pytest.fixture
def dataset_folder(tmp_path: Path) -> Path:
    """A published split folder: 5 + 4 train cells, 3 test cells, plus files that must stay local."""
    folder = tmp_path / "output" / "heart_atlas"
    _chunk(folder / "train/chunks/chunk_0000.parquet", "a", [25.0, 25.0, 40.0, 40.0, 61.0], ["d1", "d1", "d2", "d2", "d3"])
    _chunk(folder / "train/chunks/chunk_0001.parquet", "b", [61.0, 70.0, 70.0, 70.0], ["d3", "d3", "d3", "d3"])
    _chunk(folder / "test/chunks/chunk_0000.parquet", "c", [55.0, 55.0, 55.0], ["d4", "d4", "d4"])
    (folder / "hf_upload.json").write_text('{"status": "old"}\n')
    (folder / "provenance.json").write_text(json.dumps(DETAILS))
    return folder


def _front_matter(card: str) -> dict[str, Any]:
    match = re.match(r"^---\n(.*?)\n---\n", card, re.DOTALL)
    assert match, "card has no YAML front matter"
    return yaml.safe_load(match.group(1))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_upload_publishes_chunks_and_card_only(hub: LocalHub, dataset_folder: Path) -> None:
    before = _snapshot(dataset_folder)
    record = upload_dataset(dataset_folder, REPO, True, DETAILS)

    repo = hub.repo(REPO)
    assert (repo.repo_type, repo.repo_id, repo.private) == ("dataset", REPO, True)
    assert set(repo.files) == PARQUET_PATHS | {"README.md"}
    for path in PARQUET_PATHS:
        assert repo.files[path].content == (dataset_folder / path).read_bytes()
        assert repo.files[path].lfs_oid is not None  # went through LFS, not inline
    assert len(repo.commits) == 1
    assert hub.lfs_uploads == 3
    assert _snapshot(dataset_folder) == before  # the published folder is not touched (no README.md)

    assert record["status"] == "uploaded"
    assert record["repo_id"] == REPO
    assert record["private"] == "true"
    assert record["commit"] == repo.head
    assert record["files"] == "4"
    assert record["splits"] == "train,test"
    assert all(isinstance(value, str) for value in record.values())


def test_token_travels_only_in_the_authorization_header(hub: LocalHub, dataset_folder: Path) -> None:
    record = upload_dataset(dataset_folder, REPO, False, DETAILS)

    assert hub.authorizations and set(hub.authorizations) == {f"Bearer {TOKEN}"}
    assert TOKEN not in json.dumps(record) and TOKEN not in repr(record)
    assert TOKEN not in hub.repo(REPO).files["README.md"].content.decode()
    assert hub.repo(REPO).private is False and record["private"] == "false"


def test_card_declares_splits_and_describes_the_data(hub: LocalHub, dataset_folder: Path) -> None:
    upload_dataset(dataset_folder, REPO, True, DETAILS)
    card = hub.repo(REPO).files["README.md"].content.decode()

    metadata = _front_matter(card)
    assert metadata["configs"] == [{
        "config_name": "default",
        "data_files": [
            {"split": "train", "path": "train/chunks/*.parquet"},
            {"split": "test", "path": "test/chunks/*.parquet"},
        ],
    }]
    assert metadata["size_categories"] == ["n<1K"]
    assert "`heart_atlas.h5ad`" in card and "/private/data" not in card  # name only, no local path
    for figure in ("| Cells in the source file | 15 |", "| Genes (var rows) in the source file | 321 |",
                   "| Cells without a point age | 3 |", "| Train cells | 9 |", "| Test cells | 3 |",
                   "| Rows in `train` (counted in the parquet files) | 9 |", "| Youngest point age (years) | 25 |",
                   "| Oldest point age (years) | 70 |", "| Distinct point ages | 5 |"):
        assert figure in card, figure
    for parameter in ("| top_genes | 2048 |", "| seed | 42 |", "| test_size | 0.25 |", "| compression | zstd |"):
        assert parameter in card, parameter
    assert "ordered by expression, highest first" in card
    assert "ties keep the gene order" in card
    assert "at most the top 2048 genes" in card
    assert "the `development_stage` text" in card
    assert "cells with bounds only are left out" in card
    assert "Split by donor" in card


def test_uploaded_files_load_with_datasets(hub: LocalHub, dataset_folder: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    monkeypatch.setenv("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import datasets

    upload_dataset(dataset_folder, REPO, True, DETAILS)
    clone = tmp_path / "clone"
    hub.export(REPO, clone)
    cache = str(tmp_path / "datasets-cache")

    explicit = datasets.load_dataset(
        "parquet",
        data_files={
            "train": sorted(str(p) for p in (clone / "train/chunks").glob("*.parquet")),
            "test": sorted(str(p) for p in (clone / "test/chunks").glob("*.parquet")),
        },
        cache_dir=cache,
    )
    assert {name: split.num_rows for name, split in explicit.items()} == {"train": 9, "test": 3}
    assert explicit["train"].features["n_genes"].dtype == "int32"
    assert explicit["test"]["age"] == [55.0, 55.0, 55.0]

    # The same files found through the card's YAML `configs`, as load_dataset(repo_id) would.
    from_card = datasets.load_dataset(str(clone), cache_dir=cache)
    assert {name: split.num_rows for name, split in from_card.items()} == {"train": 9, "test": 3}


def test_second_upload_sends_nothing_again(hub: LocalHub, dataset_folder: Path) -> None:
    first = upload_dataset(dataset_folder, REPO, True, DETAILS)
    uploads, commits = hub.lfs_uploads, len(hub.repo(REPO).commits)

    second = upload_dataset(dataset_folder, REPO, True, DETAILS)

    assert hub.lfs_uploads == uploads == 3
    assert len(hub.repo(REPO).commits) == commits == 1  # identical card and chunks: no empty commit
    assert second["status"] == "uploaded" and second["commit"] == first["commit"]


def test_failed_commit_names_the_repo_and_a_rerun_completes(hub: LocalHub, dataset_folder: Path) -> None:
    hub.fail("commit", 500, message="storage backend unavailable", echo_authorization=True)

    with pytest.raises(HubUploadError) as caught:
        upload_dataset(dataset_folder, REPO, True, DETAILS)

    message = str(caught.value)
    assert REPO in message and "committing" in message and "500" in message
    assert TOKEN not in message
    assert caught.value.__cause__ is None and caught.value.__context__ is None  # the echoed token stays behind
    assert "***" in message  # the server did echo it; the message shows it scrubbed
    assert hub.repo(REPO).commits == [] and hub.lfs_uploads == 3  # objects went up, commit did not

    hub.heal()
    record = upload_dataset(dataset_folder, REPO, True, DETAILS)

    assert hub.lfs_uploads == 3  # the rerun sent no object the server already had
    assert set(hub.repo(REPO).files) == PARQUET_PATHS | {"README.md"}
    assert record["commit"] == hub.repo(REPO).head


def test_interrupted_object_upload_resumes_with_the_missing_ones(hub: LocalHub, dataset_folder: Path) -> None:
    hub.fail("lfs_upload", 403, after=1, message="connection to storage lost")

    with pytest.raises(HubUploadError, match=re.escape(REPO)):
        upload_dataset(dataset_folder, REPO, True, DETAILS)
    assert hub.lfs_uploads == 1 and hub.repo(REPO).commits == []

    hub.heal()
    upload_dataset(dataset_folder, REPO, True, DETAILS)

    assert hub.lfs_uploads == 3  # one before the failure + the two missing ones, none twice
    assert len(hub.repo(REPO).lfs_objects) == 3
    assert set(hub.repo(REPO).files) == PARQUET_PATHS | {"README.md"}


def test_rerun_with_fewer_chunks_removes_stale_remote_chunks(hub: LocalHub, dataset_folder: Path) -> None:
    upload_dataset(dataset_folder, REPO, True, DETAILS)
    (dataset_folder / "train/chunks/chunk_0001.parquet").unlink()

    record = upload_dataset(dataset_folder, REPO, True, DETAILS)

    assert set(hub.repo(REPO).files) == PARQUET_PATHS - {"train/chunks/chunk_0001.parquet"} | {"README.md"}
    assert hub.repo(REPO).commits[-1].deleted == ["train/chunks/chunk_0001.parquet"]
    assert record["deleted_stale_files"] == "1"


def test_unsplit_folder_is_one_train_split(hub: LocalHub, dataset_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "unsplit" / "heart_atlas"
    shutil.copytree(dataset_folder / "train" / "chunks", folder / "chunks")
    details = {**DETAILS, "parameters": {"top_genes": 0, "skip_train_test_split": True},
               "figures": {"cells": 9, "split_by": "none"}}

    upload_dataset(folder, REPO, False, details)

    card = hub.repo(REPO).files["README.md"].content.decode()
    assert set(hub.repo(REPO).files) == {"README.md", "chunks/chunk_0000.parquet", "chunks/chunk_0001.parquet"}
    assert _front_matter(card)["configs"][0]["data_files"] == [{"split": "train", "path": "chunks/*.parquet"}]
    assert "Not split" in card and "every expressed gene" in card


def test_private_upload_into_existing_public_repo_is_refused(hub: LocalHub, dataset_folder: Path) -> None:
    upload_dataset(dataset_folder, REPO, False, DETAILS)
    commits = len(hub.repo(REPO).commits)

    with pytest.raises(HubUploadError, match="already exists and is public"):
        upload_dataset(dataset_folder, REPO, True, DETAILS)
    assert len(hub.repo(REPO).commits) == commits and hub.repo(REPO).private is False


def test_refused_repo_creation_names_repo_and_step(hub: LocalHub, dataset_folder: Path) -> None:
    hub.fail("create_repo", 403, message="You don't have the rights to create a dataset under this namespace")

    with pytest.raises(HubUploadError) as caught:
        upload_dataset(dataset_folder, REPO, True, DETAILS)

    assert REPO in str(caught.value) and "creating the repository" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert hub.lfs_uploads == 0


def test_missing_token_fails_before_any_request(hub: LocalHub, dataset_folder: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    hub_client_env(monkeypatch, hub.url, None)

    with pytest.raises(HubUploadError, match="HF_TOKEN") as caught:
        upload_dataset(dataset_folder, REPO, True, DETAILS)

    assert REPO in str(caught.value)
    assert sum(hub.calls.values()) == 0


def test_folder_without_chunks_is_an_error(hub: LocalHub, tmp_path: Path) -> None:
    (tmp_path / "empty" / "train" / "chunks").mkdir(parents=True)

    with pytest.raises(HubUploadError, match="no parquet chunks"):
        upload_dataset(tmp_path / "empty", REPO, True)
    assert sum(hub.calls.values()) == 0


def test_card_is_deterministic_and_skips_empty_splits(dataset_folder: Path) -> None:
    for path in (dataset_folder / "test" / "chunks").iterdir():
        path.unlink()

    card = str(dataset_card(dataset_folder, None, REPO))

    assert card == str(dataset_card(dataset_folder, None, REPO))
    assert _front_matter(card)["configs"][0]["data_files"] == [{"split": "train", "path": "train/chunks/*.parquet"}]
    assert "| Source file | not recorded |" in card
    assert "Not recorded." in card  # no parameters given


def test_damaged_chunk_fails_before_touching_the_hub(hub: LocalHub, dataset_folder: Path) -> None:
    (dataset_folder / "test/chunks/chunk_0000.parquet").write_bytes(b"not parquet")

    with pytest.raises(HubUploadError, match="reading the local parquet chunks") as caught:
        upload_dataset(dataset_folder, REPO, True, DETAILS)

    assert REPO in str(caught.value)
    assert sum(hub.calls.values()) == 0 and hub.repos == {}


def test_split_with_no_rows_is_neither_sent_nor_declared(hub: LocalHub, dataset_folder: Path) -> None:
    """A one-donor dataset has an empty test split (a 0-row chunk): only train goes up, so
    ``load_dataset(repo)`` never meets an empty split."""
    _chunk(dataset_folder / "test/chunks/chunk_0000.parquet", "c", [], [])
    upload_dataset(dataset_folder, REPO, True, DETAILS)
    files = hub.repo(REPO).files
    assert sorted(files) == ["README.md", "train/chunks/chunk_0000.parquet", "train/chunks/chunk_0001.parquet"]
    assert _front_matter(files["README.md"].content.decode())["configs"][0]["data_files"] == [
        {"split": "train", "path": "train/chunks/*.parquet"}
    ]


# -- many files: several commits, the card last ---------------------------------------------------
def _many_chunks(folder: Path, train: int, test: int) -> list[str]:
    """``train`` + ``test`` one-row chunk files; their repo paths in sorted (upload) order."""
    for split, count in (("train", train), ("test", test)):
        for k in range(count):
            _chunk(folder / f"{split}/chunks/chunk_{k:04d}.parquet", f"{split}{k}-", [30.0], [f"d{split}"])
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.parquet"))


def test_more_than_100_files_go_in_several_commits_with_the_card_last(hub: LocalHub, tmp_path: Path) -> None:
    """250 chunks: commits of 100, 100 and 50 + the card, chunks in sorted order; the card (which
    makes the repository loadable) appears only with the last commit, when every chunk is up."""
    folder = tmp_path / "many"
    paths = _many_chunks(folder, 200, 50)
    record = upload_dataset(folder, REPO, True)

    commits = hub.repo(REPO).commits
    assert MAX_FILES_PER_COMMIT == 100
    assert [c.added for c in commits] == [paths[:100], paths[100:200], [*paths[200:], "README.md"]]
    assert all(c.deleted == [] for c in commits)
    assert "(part 3 of 3)" in commits[-1].summary
    assert set(hub.repo(REPO).files) == {*paths, "README.md"}
    assert hub.lfs_uploads == 250
    assert (record["files"], record["commits"], record["commit"]) == ("251", "3", hub.repo(REPO).head)


def test_at_most_100_files_are_one_commit_and_a_full_last_batch_leaves_the_card_alone(hub: LocalHub, tmp_path: Path) -> None:
    """99 chunks + the card = 100 files: one commit. 100 chunks + the card: the card alone after."""
    folder = tmp_path / "ninety-nine"
    paths = _many_chunks(folder, 90, 9)
    assert upload_dataset(folder, REPO, True)["commits"] == "1"
    assert [c.added for c in hub.repo(REPO).commits] == [[*paths, "README.md"]]

    other = "ageing-lab/hundred"
    folder = tmp_path / "hundred"
    paths = _many_chunks(folder, 100, 0)
    upload_dataset(folder, other, True)
    assert [c.added for c in hub.repo(other).commits] == [paths, ["README.md"]]


def test_interrupted_multi_commit_upload_resumes_without_sending_files_again(hub: LocalHub, tmp_path: Path) -> None:
    """The second of three commits fails: the Hub holds the first 100 chunks and no card (not
    loadable). A re-run skips the committed batch (no empty commit), sends none of the objects the
    Hub already has, and ends with the card."""
    folder = tmp_path / "many"
    paths = _many_chunks(folder, 200, 50)
    hub.fail("commit", 503, after=1, times=1, message="commit service unavailable")

    with pytest.raises(HubUploadError, match=r"committing \(part 2 of 3\)"):
        upload_dataset(folder, REPO, True)
    assert set(hub.repo(REPO).files) == set(paths[:100])  # no README.md yet
    assert hub.lfs_uploads == 200  # the second batch's objects went up; its commit did not

    record = upload_dataset(folder, REPO, True)

    assert hub.lfs_uploads == 250  # only the third batch's 50 objects were new
    assert [c.added for c in hub.repo(REPO).commits] == [paths[:100], paths[100:200], [*paths[200:], "README.md"]]
    assert record["commits"] == "2" and record["commit"] == hub.repo(REPO).head


def test_stale_remote_chunks_are_deleted_before_or_with_the_card(hub: LocalHub, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    paths = _many_chunks(folder, 150, 0)
    upload_dataset(folder, REPO, True)
    for path in paths[120:]:
        (folder / path).unlink()

    record = upload_dataset(folder, REPO, True)

    last = hub.repo(REPO).commits[-1]
    assert last.deleted == paths[120:] and last.added == ["README.md"]  # the chunks themselves are unchanged
    assert set(hub.repo(REPO).files) == {*paths[:120], "README.md"}
    assert (record["deleted_stale_files"], record["commits"]) == ("30", "1")


def test_commit_batches() -> None:
    assert commit_batches([], "card", 3) == [["card"]]
    assert commit_batches([1, 2], "card", 3) == [[1, 2, "card"]]
    assert commit_batches([1, 2, 3], "card", 3) == [[1, 2, 3], ["card"]]
    assert commit_batches([1, 2, 3, 4, 5, 6, 7], "card", 3) == [[1, 2, 3], [4, 5, 6], [7, "card"]]
    with pytest.raises(ValueError, match="size"):
        commit_batches([1], "card", 0)


# -- the token saved by `hf auth login` -----------------------------------------------------------
def _saved_login(monkeypatch: pytest.MonkeyPatch, home: Path, token: str | None) -> None:
    """HF_TOKEN unset, HF_HOME at ``home`` holding the ``token`` file as ``hf auth login`` saves
    it; huggingface_hub read the paths at import, so its constants are pointed there too."""
    from huggingface_hub import constants

    home.mkdir(parents=True, exist_ok=True)
    if token is not None:
        (home / "token").write_text(token)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))


def test_token_saved_by_hf_auth_login_is_used_and_copied_nowhere(hub: LocalHub, dataset_folder: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    hub_client_env(monkeypatch, hub.url, None)
    home = tmp_path / "hf-home"
    _saved_login(monkeypatch, home, TOKEN)
    assert hub_token_available()

    record = upload_dataset(dataset_folder, REPO, True, DETAILS)

    assert record["status"] == "uploaded" and set(hub.repo(REPO).files) == PARQUET_PATHS | {"README.md"}
    assert hub.authorizations and set(hub.authorizations) == {f"Bearer {TOKEN}"}
    assert "HF_TOKEN" not in os.environ and TOKEN not in json.dumps(record)
    assert sorted(p.name for p in home.iterdir()) == ["token"]  # no other copy in HF_HOME
    holding = [p for p in tmp_path.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert holding == [home / "token"]  # nor in the dataset folder or anywhere else under the test folder
    assert all(TOKEN.encode() not in stored.content for stored in hub.repo(REPO).files.values())


def test_no_token_anywhere_is_not_available(hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub_client_env(monkeypatch, hub.url, None)
    _saved_login(monkeypatch, tmp_path / "hf-home", None)
    assert not hub_token_available()
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert hub_token_available()


def test_failing_token_lookup_is_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing() -> str:
        raise RuntimeError("OIDC exchange failed")

    monkeypatch.setattr(hf_upload, "get_token", failing)
    assert not hub_token_available()

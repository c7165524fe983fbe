"""Upload a finished dataset folder to the HuggingFace Hub, with a dataset card made in memory.

Why it is built this way:

* The parquet chunks go up in commits of at most :data:`MAX_FILES_PER_COMMIT` files each, in
  sorted order, and the card (``README.md``) only in the last commit, alone or with the last
  files: the card's ``configs`` make the repository loadable, so it appears only once every
  chunk is there, and the card on the Hub always describes the data next to it. (The Hub
  advises small commits; one huge commit is slow to process and fails as a whole.) The card is
  made again for the repository (its title and loading example name the repository) and sent as
  bytes: the published folder is never modified.
* Only the chunks of splits that hold rows (``train/chunks/*.parquet``, ``test/chunks/*.parquet`` or
  ``chunks/*.parquet``) and the card are sent; bookkeeping files (``hf_upload.json``, ``provenance.json``, ...) stay local. Remote
  parquet files in those folders that are not in the local folder are deleted (after the new
  chunks, before or with the card), because the card's ``configs`` globs would otherwise mix
  stale chunks into the dataset.
* Re-running after a failure is cheap: the Hub reports which LFS/Xet objects it already holds and
  which files are unchanged, so only what is missing is sent, and a commit whose files are all
  on the Hub already is skipped; the card is deterministic, so an unchanged folder makes no new
  commit at all.
* The token comes only from huggingface_hub's own lookup (``HF_TOKEN``, or the token file that
  ``hf auth login`` saved). It is never passed around, returned, copied into the environment or a
  file, or written into an error message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token

from scrna_assets.core.dataset_card import CARD_FILE, SPLIT_DIRS, UNSPLIT_DIR, dataset_card, published_splits

_CHUNK_DIRS = (*SPLIT_DIRS.values(), UNSPLIT_DIR)
MAX_FILES_PER_COMMIT = 100
"""Operations (files added or deleted, the card included) in one commit."""
_TOKEN_LIKE = re.compile(r"\bhf_[A-Za-z0-9]{8,}\b")


class HubUploadError(RuntimeError):
    """An upload failed; the message names the repo and the problem, never the token."""

    def __init__(self, repo_id: str, problem: str) -> None:
        self.repo_id = repo_id
        self.problem = problem
        super().__init__(f"HuggingFace upload to dataset repo {repo_id!r} failed: {problem}")


def _scrub(text: str, token: str | None) -> str:
    """Remove the token (and anything shaped like one) from text bound for a message."""
    if token:
        text = text.replace(token, "***")
    return _TOKEN_LIKE.sub("hf_***", text)


def _problem(stage: str, error: Exception, token: str | None) -> str:
    detail = " ".join(str(error).split()) or type(error).__name__
    return _scrub(f"{stage}: {type(error).__name__}: {detail}", token)


def hub_token_available() -> bool:
    """Whether huggingface_hub finds a token (``HF_TOKEN``, or the file ``hf auth login`` saved
    under ``HF_HOME``), without returning it. False when the lookup itself fails."""
    try:
        return bool(get_token())
    except Exception:  # e.g. a failing OIDC exchange
        return False


def commit_batches(operations: list[Any], card: Any, size: int = MAX_FILES_PER_COMMIT) -> list[list[Any]]:
    """``operations`` in order, cut into batches of at most ``size``, then ``card`` at the end of
    the last batch, or alone in one more batch when the last is full."""
    if size < 1:
        raise ValueError(f"size must be >= 1, not {size}")
    batches = [operations[i : i + size] for i in range(0, len(operations), size)]
    if batches and len(batches[-1]) < size:
        batches[-1] = [*batches[-1], card]
    else:
        batches.append([card])
    return batches


def upload_dataset(
    folder: Path, repo_id: str, private: bool, details: dict[str, Any] | None = None
) -> dict[str, str]:
    """Create the dataset repo (``exist_ok``) and commit the chunks, at most
    :data:`MAX_FILES_PER_COMMIT` files a commit, with the card in the last commit.

    Safe to re-run after a failure: objects and files the Hub already holds are not sent again. Refuses to
    upload into an existing *public* repo when ``private`` is asked for, so data meant to stay
    private is never published by accident. Raises :class:`HubUploadError` on any failure.
    The record's ``commit`` is the last commit (the card's, or the head when nothing changed);
    ``commits`` counts the new commits this call made.
    """
    folder = Path(folder)
    try:
        splits = published_splits(folder)
    except Exception as error:  # a damaged chunk fails before anything is created on the Hub
        raise HubUploadError(repo_id, _problem("reading the local parquet chunks", error, None)) from error
    if not splits:
        raise HubUploadError(repo_id, f"no parquet chunks under {folder} (train/chunks, test/chunks or chunks)")
    try:
        token = get_token()
    except Exception as error:  # e.g. a failing OIDC exchange: report it without details
        raise HubUploadError(repo_id, f"could not look up the HuggingFace token ({type(error).__name__})") from None
    if not token:
        raise HubUploadError(repo_id, "no HuggingFace token found: set HF_TOKEN or run `hf auth login`")

    api = HfApi()
    stage = "reading the local parquet chunks"
    try:
        # The card first: a damaged chunk must fail before anything is created on the Hub.
        card = str(dataset_card(folder, details, repo_id)).encode("utf-8")
        local = {f"{s.repo_dir}/{p.name}": p for s in splits for p in s.files}
        stage = "creating the repository"
        repo_url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        stage = "reading the repository's visibility"
        info = api.repo_info(repo_id, repo_type="dataset")
        actual_private, head = info.private, info.sha
        if private and actual_private is False:
            raise HubUploadError(
                repo_id, "the repository already exists and is public, but a private upload was asked for; "
                "make it private on the Hub or choose another repo id",
            )
        stage = "listing the repository's files"
        remote = api.list_repo_files(repo_id, repo_type="dataset")
        stale = sorted(
            path for path in remote
            if path not in local and path.endswith(".parquet") and path.rsplit("/", 1)[0] in _CHUNK_DIRS
        )
        batches = commit_batches(
            [
                *(CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(p)) for path, p in sorted(local.items())),
                *(CommitOperationDelete(path_in_repo=path) for path in stale),
            ],
            CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card),
            MAX_FILES_PER_COMMIT,
        )
        made = 0
        for number, operations in enumerate(batches, 1):
            part = f" (part {number} of {len(batches)})" if len(batches) > 1 else ""
            stage = f"uploading files and committing{part}"
            commit = api.create_commit(
                repo_id=repo_id,
                repo_type="dataset",
                operations=operations,
                commit_message=f"Upload {folder.name} cell sentences{part}",
                commit_description=(
                    f"{len(local)} parquet chunk files and the dataset card, uploaded by scrna_assets"
                    + (f" in {len(batches)} commits; the card comes last." if len(batches) > 1 else ".")
                ),
            )
            if commit.oid != head:  # a batch the Hub already holds whole makes no commit
                made, head = made + 1, commit.oid
    except HubUploadError:
        raise
    except Exception as error:
        failure = HubUploadError(repo_id, _problem(stage, error, token))
        if token not in str(error) and not any(token in str(arg) for arg in error.args):
            raise failure from error
        # The server echoed the token: raise outside this block so no chained exception carries it.
    else:
        failure = None
    if failure is not None:
        raise failure
    return {
        "status": "uploaded",
        "repo_id": repo_id,
        "repo_url": str(repo_url),
        "private": "true" if (actual_private if actual_private is not None else private) else "false",
        "commit": str(commit.oid),
        "commit_url": str(commit.commit_url),
        "files": str(len(local) + 1),
        "deleted_stale_files": str(len(stale)),
        "commits": str(made),
        "splits": ",".join(s.name for s in splits),
    }

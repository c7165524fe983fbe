"""Upload a finished dataset folder to the HuggingFace Hub, with a dataset card made in memory.

Why it is built this way:

* One ``create_commit`` holds the parquet chunks *and* the card, so the card on the Hub always
  describes the data next to it. The card is sent as bytes: the published folder is never modified.
* Only ``train/chunks/*.parquet``, ``test/chunks/*.parquet`` (or ``chunks/*.parquet``) and the card
  are sent; bookkeeping files (``hf_upload.json``, ``provenance.json``, ...) stay local. Remote
  parquet files in those folders that are not in the local folder are deleted in the same commit,
  because the card's ``configs`` globs would otherwise mix stale chunks into the dataset.
* Re-running after a failure is cheap: the Hub reports which LFS/Xet objects it already holds and
  which files are unchanged, so only what is missing is sent; the card is deterministic, so an
  unchanged folder makes no new commit at all.
* The token comes only from huggingface_hub's own lookup (``HF_TOKEN`` or the saved login). It is
  never passed around, returned, or written into an error message.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token

CARD_PATH = "README.md"
SPLIT_DIRS = {"train": "train/chunks", "test": "test/chunks"}
UNSPLIT_DIR = "chunks"
CHUNK_GLOB = "*.parquet"
_CHUNK_DIRS = (*SPLIT_DIRS.values(), UNSPLIT_DIR)
_TOKEN_LIKE = re.compile(r"\bhf_[A-Za-z0-9]{8,}\b")

_FIGURE_LABELS = {
    "cells": "Cells in the source file",
    "genes": "Genes (var rows) in the source file",
    "genes_total": "Genes with a token",
    "genes_mapped_hgnc": "Genes mapped to an HGNC symbol",
    "genes_fallback": "Genes kept under their source name (no HGNC symbol)",
    "genes_dropped": "Genes dropped (no usable name)",
    "genes_duplicate_token": "Genes sharing a token with another gene",
    "cells_with_age": "Cells with an age in years",
    "cells_without_age": "Cells without a point age (left out)",
    "split_by": "Split mode",
    "train_cells": "Train cells",
    "test_cells": "Test cells",
    "train_donors": "Train donors",
    "test_donors": "Test donors",
}


class HubUploadError(RuntimeError):
    """An upload failed; the message names the repo and the problem, never the token."""

    def __init__(self, repo_id: str, problem: str) -> None:
        self.repo_id = repo_id
        self.problem = problem
        super().__init__(f"HuggingFace upload to dataset repo {repo_id!r} failed: {problem}")


@dataclass(frozen=True)
class _Split:
    name: str
    repo_dir: str
    files: list[Path]


def _splits(folder: Path) -> list[_Split]:
    """The splits present in ``folder`` (empty chunk folders are left out: a glob must match)."""
    found = [
        _Split(name, repo_dir, sorted((folder / repo_dir).glob(CHUNK_GLOB)))
        for name, repo_dir in SPLIT_DIRS.items()
        if (folder / repo_dir).is_dir()
    ]
    if not found and (folder / UNSPLIT_DIR).is_dir():
        found = [_Split("train", UNSPLIT_DIR, sorted((folder / UNSPLIT_DIR).glob(CHUNK_GLOB)))]
    return [split for split in found if split.files]


def _rows(files: list[Path]) -> int:
    return sum(pq.read_metadata(path).num_rows for path in files)


def _age_figures(files: list[Path]) -> dict[str, Any]:
    """Age range and distinct ages read from the data itself, so the card can't disagree with it."""
    low, high, distinct = math.inf, -math.inf, set()
    for path in files:
        if "age" not in pq.read_schema(path).names:
            return {}
        ages = pq.read_table(path, columns=["age"]).column("age").drop_null()
        if len(ages):
            low = min(low, pc.min(ages).as_py())
            high = max(high, pc.max(ages).as_py())
            distinct.update(pc.unique(ages).to_pylist())
    if not distinct:
        return {}
    return {"age_min_years": low, "age_max_years": high, "distinct_ages": len(distinct)}


def _size_category(rows: int) -> str:
    """The Hub's ``size_categories`` bucket for ``rows``."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"),
                         (1_000_000_000, "100M<n<1B")):
        if rows < limit:
            return label
    return "1B<n<10B"


def _text(value: Any) -> str:
    """A value as one markdown table cell."""
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        text = ", ".join(_text(v) for v in value)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _table(rows: list[tuple[str, Any]], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {_text(label)} | {_text(value)} |" for label, value in rows]
    return "\n".join(lines)


def _source(details: dict[str, Any]) -> tuple[str | None, int | None]:
    """The source file's *name* (never its local path) and size, from ``details``."""
    source = details.get("source_file")
    size = details.get("source_size")
    record = details.get("input")
    if isinstance(record, dict):
        source = source or record.get("path") or record.get("name")
        size = size if size is not None else record.get("size")
    elif isinstance(record, str):
        source = source or record
    name = Path(str(source)).name if source else None
    return name, size if isinstance(size, int) else None


def _sections(details: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(figures, parameters) from ``details``; loose top-level scalars count as figures."""
    figures = dict(details.get("figures") or {})
    parameters = _flatten(dict(details.get("parameters") or {}))
    for key, value in details.items():
        if key in {"figures", "parameters", "input", "source_file", "source_size"}:
            continue
        if isinstance(value, dict):
            figures.update(_flatten(value, f"{key}."))
        else:
            figures[key] = value
    return figures, parameters


def _contract(splits: list[_Split], figures: dict[str, Any], parameters: dict[str, Any]) -> str:
    """The data contract in a few sentences, filled in with the parameters actually used."""
    top = parameters.get("top_genes", figures.get("top_genes"))
    if isinstance(top, int) and top > 0:
        genes = f"at most the top {top} genes"
    elif top == 0:
        genes = "every expressed gene (no top-N cut)"
    else:
        genes = "the top N genes (N not recorded)"
    mode = figures.get("split_by") or parameters.get("split_by")
    seed = parameters.get("seed")
    seed_text = f", seed {seed}" if seed is not None else ""
    test_size = parameters.get("test_size")
    share = f", target test share {_text(test_size)}" if test_size is not None else ""
    if [s.name for s in splits] == ["train"] and splits[0].repo_dir == UNSPLIT_DIR:
        split = "Not split: every cell with an age is in the single `train` split."
    elif mode == "donor":
        split = f"Split by donor (`donor_id`): all cells of a donor are in the same split{share}{seed_text}."
    elif mode == "cell":
        split = f"Split by cell: cells are assigned to train or test at random{share}{seed_text}."
    else:
        split = f"Split by donor or by cell (mode {_text(mode) if mode else 'not recorded'}){share}{seed_text}."
    return "\n".join([
        "- One row per cell. `cell_sentence` is a space-separated list of gene symbols (HGNC approved "
        "symbols, mapped from Ensembl ids) ordered by expression, highest first; ties keep the gene order "
        f"of the source file; {genes} with a value > 0 are listed. `n_genes` is the number of words.",
        "- `age` is the donor age in years (float64), parsed from `development_stage`. Cells whose stage "
        "is not a single point in time have no age and are left out of this dataset.",
        f"- {split}",
        "- All `obs` columns of the source file are kept (renamed `obs_<name>` where a name clashes).",
    ])


def dataset_card(folder: Path, repo_id: str, details: dict[str, Any] | None = None) -> str:
    """The README: YAML ``configs`` so ``datasets.load_dataset(repo_id)`` finds the splits, then the
    source, figures, parameters and data contract. Deterministic, so an unchanged folder re-uploads
    as a no-op."""
    details = details or {}
    splits = _splits(folder)
    counts = {split.name: _rows(split.files) for split in splits}
    all_files = [path for split in splits for path in split.files]
    metadata = {
        "pretty_name": f"{folder.name} cell sentences",
        "configs": [{
            "config_name": "default",
            "data_files": [{"split": s.name, "path": f"{s.repo_dir}/{CHUNK_GLOB}"} for s in splits],
        }],
        "tags": ["single-cell", "cell-sentences", "aging", "biology"],
        "size_categories": [_size_category(sum(counts.values()))],
    }
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)

    source, size = _source(details)
    figures, parameters = _sections(details)
    source_line = f"`{source}`" if source else "not recorded"
    if source and size is not None:
        source_line += f" ({size:,} bytes)"

    figure_rows: list[tuple[str, Any]] = [
        (_FIGURE_LABELS.get(key, key), value) for key, value in figures.items() if value is not None
    ]
    figure_rows += [(f"Rows in `{name}` (counted in the parquet files)", n) for name, n in counts.items()]
    figure_rows.append(("Parquet chunk files", len(all_files)))
    ages = _age_figures(all_files)
    if ages:
        figure_rows += [
            ("Youngest age (years)", ages["age_min_years"]),
            ("Oldest age (years)", ages["age_max_years"]),
            ("Distinct ages", ages["distinct_ages"]),
        ]
    parameter_text = (
        _table(sorted(parameters.items()), ("parameter", "value")) if parameters else "Not recorded."
    )
    layout = "\n".join(f"- `{s.name}`: `{s.repo_dir}/{CHUNK_GLOB}` ({counts[s.name]:,} cells)" for s in splits)

    return f"""---
{front}---
# {repo_id}

Cell sentences for ageing research, made by `scrna_assets` from one CellxGene `.h5ad` file.

Source file: {source_line}

## Files

{layout}

```python
from datasets import load_dataset

dataset = load_dataset("{repo_id}")
```

## Data contract

{_contract(splits, figures, parameters)}

## Figures

{_table(figure_rows, ("figure", "value"))}

## Processing parameters

{parameter_text}
"""


def _scrub(text: str, token: str | None) -> str:
    """Remove the token (and anything shaped like one) from text bound for a message."""
    if token:
        text = text.replace(token, "***")
    return _TOKEN_LIKE.sub("hf_***", text)


def _problem(stage: str, error: Exception, token: str | None) -> str:
    detail = " ".join(str(error).split()) or type(error).__name__
    return _scrub(f"{stage}: {type(error).__name__}: {detail}", token)


def upload_dataset(
    folder: Path, repo_id: str, private: bool, details: dict[str, Any] | None = None
) -> dict[str, str]:
    """Create the dataset repo (``exist_ok``) and commit the chunks plus card in one commit.

    Safe to re-run after a failure: objects the Hub already holds are not sent again. Refuses to
    upload into an existing *public* repo when ``private`` is asked for, so data meant to stay
    private is never published by accident. Raises :class:`HubUploadError` on any failure.
    """
    folder = Path(folder)
    splits = _splits(folder)
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
        card = dataset_card(folder, repo_id, details).encode("utf-8")
        local = {f"{s.repo_dir}/{p.name}": p for s in splits for p in s.files}
        stage = "creating the repository"
        repo_url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        stage = "reading the repository's visibility"
        actual_private = api.repo_info(repo_id, repo_type="dataset").private
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
        operations: list[CommitOperationAdd | CommitOperationDelete] = [
            CommitOperationAdd(path_in_repo=CARD_PATH, path_or_fileobj=card),
            *(CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(p)) for path, p in sorted(local.items())),
            *(CommitOperationDelete(path_in_repo=path) for path in stale),
        ]
        stage = "uploading files and committing"
        commit = api.create_commit(
            repo_id=repo_id,
            repo_type="dataset",
            operations=operations,
            commit_message=f"Upload {folder.name} cell sentences",
            commit_description=f"{len(local)} parquet chunk files and the dataset card, uploaded by scrna_assets.",
        )
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
        "splits": ",".join(s.name for s in splits),
    }

"""Upload a split dataset folder to the HuggingFace Hub with a dataset card.

The token comes from huggingface_hub's own lookup (``HF_TOKEN``), so it never passes through
settings, run config, metadata or logs.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from huggingface_hub import HfApi

UPLOAD_PATTERNS = ["README.md", "train/chunks/*.parquet", "test/chunks/*.parquet", "chunks/*.parquet"]


def _rows(folder: Path) -> int:
    return sum(pq.read_metadata(p).num_rows for p in sorted(folder.glob("chunk_*.parquet")))


def dataset_card(folder: Path, repo_id: str) -> str:
    """A README whose YAML ``configs`` lets ``datasets.load_dataset(repo)`` find the splits."""
    splits = [s for s in ("train", "test") if (folder / s / "chunks").is_dir()]
    if splits:
        files = "\n".join(f"  - split: {s}\n    path: {s}/chunks/*.parquet" for s in splits)
        counts = "\n".join(f"- {s}: {_rows(folder / s / 'chunks')} cells" for s in splits)
    else:
        files = "  - split: train\n    path: chunks/*.parquet"
        counts = f"- train: {_rows(folder / 'chunks')} cells"
    return f"""---
configs:
- config_name: default
  data_files:
{files}
tags:
- single-cell
- cell-sentences
- aging
---
# {repo_id}

Cell sentences made by scrna_assets from `{folder.name}`: each row is one cell, `cell_sentence`
lists the gene symbols it expresses ordered by expression (highest first, ties by gene order),
`age` is the donor age in years parsed from `development_stage` (cells without a point age are
left out), and all obs columns of the source file are kept.

{counts}
"""


def upload_dataset(folder: Path, repo_id: str, private: bool) -> dict[str, str]:
    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    card = folder / "README.md"
    card.write_text(dataset_card(folder, repo_id), encoding="utf-8")
    commit = api.upload_folder(
        repo_id=repo_id, repo_type="dataset", folder_path=folder, allow_patterns=UPLOAD_PATTERNS,
        commit_message=f"Upload {folder.name} cell sentences",
    )
    return {"status": "uploaded", "repo_id": repo_id, "commit": str(getattr(commit, "oid", commit))}

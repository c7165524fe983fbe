"""The dataset card: what a scientist needs to use, judge and cite one published dataset.

Written next to the data (``<output>/<name>/README.md``), so ``datasets.load_dataset`` on the local
folder finds the same splits as on the Hub, and sent with the upload. The YAML header comes from
huggingface_hub's ``DatasetCardData`` (no hand-written YAML); a split with no rows is not declared,
so loading never meets an empty glob. Every figure is read from the provenance record or counted in
the parquet files themselves, so the card cannot disagree with the data it describes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
from huggingface_hub import DatasetCard, DatasetCardData

from scrna_assets.core.atomic_files import write_bytes_atomic

CARD_FILE = "README.md"
SPLIT_DIRS = {"train": "train/chunks", "test": "test/chunks"}
UNSPLIT_DIR = "chunks"
CHUNK_GLOB = "*.parquet"
CXG_LICENSE = "cc-by-4.0"
"""CZ CELLxGENE Discover distributes its datasets under CC BY 4.0 and adds ``uns["citation"]`` to them."""
UNKNOWN_LICENSE = "other"
CELL2SENTENCE_CITATION = (
    "Levine D., Rizvi S. A., Lévy S., et al. Cell2Sentence: Teaching Large Language Models the Language "
    "of Biology. Proceedings of the 41st International Conference on Machine Learning (ICML), 2024. "
    "bioRxiv doi:10.1101/2023.09.11.557287"
)

_FIGURE_LABELS = {
    "cells": "Cells in the source file",
    "genes": "Genes (var rows) in the source file",
    "genes_total": "Genes with a token",
    "genes_mapped_hgnc": "Genes mapped to an HGNC symbol",
    "genes_fallback": "Genes kept under their source name (no HGNC symbol)",
    "genes_dropped": "Genes dropped (no usable name)",
    "genes_duplicate_token": "Genes sharing a token with another gene",
    "cells_with_age": "Cells with a point age in years",
    "cells_without_age": "Cells without a point age",
    "split_by": "Split mode",
    "train_cells": "Train cells",
    "test_cells": "Test cells",
    "train_donors": "Train donors",
    "test_donors": "Test donors",
    "donors_in_both": "Donors with cells in both splits",
    "primary_cells": "Cells marked is_primary_data = True",
    "non_primary_cells": "Cells marked is_primary_data = False (also in another dataset)",
    "non_primary_dropped": "Non-primary cells dropped (--primary-only)",
}
_SECTION_FIGURES = {"age_label_kinds", "split_note", "notes", "matrix_dtype", "matrix_integer_values"}
_AGE_KINDS = {
    "point": "one point in time (`N-year-old stage`, months, weeks, days): `age` and its unit as bounds",
    "range": "a range (`15-19 year-old stage`, decades): bounds only, `age` null",
    "censored": "open-ended (`80 year-old and over stage`, centenarian): a lower bound only",
    "newborn": "newborn: `age` 0 and the span the term states",
    "prenatal": "prenatal (Carnegie, Theiler 1-26, embryonic day): no age",
    "no_age": "broad or unknown stage: no age",
    "out_of_range": "an age outside [0, 150) years: set to null",
    "not_text": "a numeric development_stage column: no age",
}


@dataclass(frozen=True)
class Split:
    """One split of a published folder: its name, its folder in the repository, its files, rows."""

    name: str
    repo_dir: str
    files: list[Path]
    rows: int


def published_splits(folder: Path) -> list[Split]:
    """The splits of ``folder`` that hold rows (an empty split is left out: its glob must not be declared)."""
    found = [(name, repo_dir) for name, repo_dir in SPLIT_DIRS.items() if (folder / repo_dir).is_dir()]
    if not found and (folder / UNSPLIT_DIR).is_dir():
        found = [("train", UNSPLIT_DIR)]
    splits = []
    for name, repo_dir in found:
        files = sorted((folder / repo_dir).glob(CHUNK_GLOB))
        rows = sum(pq.read_metadata(path).num_rows for path in files)
        if rows:
            splits.append(Split(name, repo_dir, files, rows))
    return splits


def license_of(source: dict[str, Any], requested: str) -> str:
    """CC BY 4.0 for a file CZ CELLxGENE Discover distributes (it carries ``uns["citation"]``);
    otherwise what the user declared (``--license``)."""
    return CXG_LICENSE if source.get("citation") else requested


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


def _table(rows: list[tuple[str, Any]], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {_text(label)} | {_text(value)} |" for label, value in rows]
    return "\n".join(lines)


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _column_values(files: list[Path], column: str) -> tuple[float, float, int] | None:
    """(min, max, distinct) of a numeric column over the files, or None when it has no value."""
    low, high, distinct = math.inf, -math.inf, set()
    for path in files:
        if column not in pq.read_schema(path).names:
            return None
        values = pq.read_table(path, columns=[column]).column(column).drop_null()
        if len(values):
            low, high = min(low, pc.min(values).as_py()), max(high, pc.max(values).as_py())
            distinct.update(pc.unique(values).to_pylist())
    return (low, high, len(distinct)) if distinct else None


def _organisms(files: list[Path], source: dict[str, Any]) -> list[str]:
    """Organisms from the data's ``organism`` column, else the file's ``uns``."""
    found: set[str] = set()
    for path in files:
        if "organism" in pq.read_schema(path).names:
            found.update(v for v in pq.read_table(path, columns=["organism"]).column("organism").cast("string").unique().to_pylist() if v)
    if not found and source.get("organism"):
        found.add(str(source["organism"]))
    return sorted(found)


def _source_section(details: dict[str, Any], organisms: list[str]) -> str:
    source = details.get("source") or {}
    record = details.get("input") if isinstance(details.get("input"), dict) else {}
    name = Path(str(record["path"])).name if record.get("path") else None  # the name only, never the local path
    file_line = f"`{name}`" + (f" ({record['size']:,} bytes)" if isinstance(record.get("size"), int) else "") if name else "not recorded"
    rows = [("Source file", file_line)]
    for key, label in (("title", "Title"), ("schema_version", "CELLxGENE schema version")):
        if source.get(key):
            rows.append((label, source[key]))
    rows.append(("Organism(s)", ", ".join(organisms) or "not recorded"))
    return _table(rows, ("source", "value"))


def _license_section(license_id: str) -> str:
    if license_id == CXG_LICENSE:
        return ("CC BY 4.0, the license under which CZ CELLxGENE Discover distributes the source file "
                "(the file carries the citation Discover adds to the datasets it publishes). Cite the source below.")
    if license_id == UNKNOWN_LICENSE:
        return ("Unknown: the source file does not state its license. Check the license of the source data "
                "before you share or publish anything made from this dataset.")
    return f"`{license_id}`, as declared with `--license` by whoever made this dataset."


def _citation_section(source: dict[str, Any]) -> str:
    lines = []
    if source.get("citation"):
        lines.append(f"The source data:\n\n> {_text(source['citation'])}\n")
    lines.append(f"The cell sentence representation (Cell2Sentence):\n\n> {CELL2SENTENCE_CITATION}")
    return "\n".join(lines)


def _matrix_sentence(figures: dict[str, Any], parameters: dict[str, Any]) -> str:
    matrix = figures.get("matrix_used")
    if not matrix:
        return "- Matrix: not recorded."
    kind = {True: "integer values (counts)", False: "non-integer values (normalized: per-cell scaling keeps each cell's ranking, per-gene scaling would not)"}
    held = kind.get(figures.get("matrix_integer_values"), "values of unrecorded kind")
    dtype = f", {figures['matrix_dtype']}" if figures.get("matrix_dtype") else ""
    return f"- Matrix: `{matrix}` ({figures.get('matrix_encoding', 'unknown encoding')}{dtype}), which held {held}."


def _sentence_rule(parameters: dict[str, Any]) -> str:
    top = parameters.get("top_genes")
    genes = f"at most the top {top} genes" if isinstance(top, int) and top > 0 else (
        "every expressed gene (no top-N cut)" if top == 0 else "the top N genes (N not recorded)")
    if parameters.get("tie_break") == "position":
        ties = "ties keep the gene order of the source file (`--tie-break position`)"
    elif parameters.get("tie_break") == "random":
        ties = (f"ties (equal values) are broken by a pseudo-random order that depends only on the seed "
                f"({parameters.get('seed')}), the dataset name, the cell id and the gene symbol (`--tie-break random`), "
                "so the order inside a tie carries no information about the source file's gene order")
    else:
        ties = "the tie rule was not recorded"
    return (f"- One row per cell. `cell_sentence` is a space-separated list of gene symbols (HGNC approved symbols, "
            f"mapped from Ensembl ids) ordered by expression, highest first; {ties}; {genes} with a value > 0 are "
            "listed. `n_genes` is the number of words.")


def _age_rules(figures: dict[str, Any], parameters: dict[str, Any]) -> str:
    kept = ("cells with a point age, and cells with age bounds only (`--include-age-ranges`)"
            if parameters.get("include_age_ranges") else "cells with a point age; cells with bounds only are left out")
    lines = [
        "- `age` is the donor age in years (float64), `age_min` (inclusive) and `age_max` (exclusive) its bounds, "
        "from the canonical label of `development_stage_ontology_term_id` (HsapDv/MmusDv), else the "
        f"`development_stage` text. This dataset keeps {kept}. Cells per kind of stage label:",
    ]
    kinds = figures.get("age_label_kinds") or {}
    for kind, count in sorted(kinds.items()):
        lines.append(f"  - {_AGE_KINDS.get(kind, kind)}: {count:,}")
    if not kinds:
        lines.append("  - not recorded")
    return "\n".join(lines)


def _split_sentence(splits: list[Split], figures: dict[str, Any], parameters: dict[str, Any]) -> str:
    mode = figures.get("split_by")
    share = f", target test share {_text(parameters['test_size'])}" if parameters.get("test_size") is not None else ""
    seed = f", seed {parameters['seed']}" if parameters.get("seed") is not None else ""
    donors = f" Donors: {figures.get('train_donors', 0)} in train, {figures.get('test_donors', 0)} in test, {figures.get('donors_in_both', 0)} in both."
    if mode == "none" or (splits and splits[0].repo_dir == UNSPLIT_DIR):
        return "- Not split: every kept cell is in the single `train` split."
    if mode == "donor":
        return (f"- Split by donor (`donor_id`): all cells of a donor are in the same split, so no age label leaks "
                f"from train to test{share}{seed}.{donors}")
    if mode == "cell":
        note = figures.get("split_note") or "split by cell: cells of one donor may be in both splits"
        return f"- {note[0].upper()}{note[1:]}{share}{seed}: cells were drawn per age stratum.{donors}"
    return f"- Split mode not recorded{share}{seed}."


def _limitations(figures: dict[str, Any]) -> str:
    items = [
        "Donor ids are unique only within one source dataset: the same person in two datasets can land on "
        "different sides when datasets are combined.",
        "Ages come from developmental-stage labels, not birth dates: a point label covers its whole unit "
        "(a `23-year-old stage` donor is in [23, 24)).",
    ]
    if figures.get("split_by") == "cell":
        items.append("This split is by cell: cells of one donor, and so one age label, can be on both sides (label leakage for an age model).")
    if figures.get("non_primary_cells"):
        items.append("Cells marked `is_primary_data = False` also appear in another dataset: training on several "
                     "datasets can see them twice, possibly on both sides.")
    if figures.get("matrix_integer_values") is False:
        items.append("The matrix held non-integer values: the ranking is the one of those values, which keeps each "
                     "cell's order only under per-cell scaling.")
    return "\n".join(f"- {item}" for item in items)


def dataset_card(folder: Path, details: dict[str, Any] | None = None, repo_id: str | None = None, name: str | None = None) -> DatasetCard:
    """The card of a published folder, from its provenance ``details``; ``repo_id`` names the Hub
    repository in the title and the loading example (else the local folder); ``name`` is the
    dataset's name (default: the folder's, which a staging folder does not have)."""
    name = name or folder.name
    details = details or {}
    figures = dict(details.get("figures") or {})
    parameters = dict(details.get("parameters") or {})
    source = details.get("source") or {}
    splits = published_splits(folder)
    files = [path for split in splits for path in split.files]
    license_id = license_of(source, parameters.get("license") or UNKNOWN_LICENSE)
    data = DatasetCardData(
        license=license_id,
        pretty_name=f"{name} cell sentences",
        tags=["single-cell", "cell-sentences", "aging", "biology"],
        size_categories=[_size_category(sum(s.rows for s in splits))],
        configs=[{"config_name": "default", "data_files": [{"split": s.name, "path": f"{s.repo_dir}/{CHUNK_GLOB}"} for s in splits]}],
    )
    figure_rows = [(_FIGURE_LABELS.get(k, k), v) for k, v in figures.items() if v is not None and k not in _SECTION_FIGURES]
    figure_rows += [(f"Rows in `{s.name}` (counted in the parquet files)", s.rows) for s in splits]
    figure_rows.append(("Parquet chunk files", len(files)))
    ages = _column_values(files, "age")
    if ages:
        figure_rows += [("Youngest point age (years)", ages[0]), ("Oldest point age (years)", ages[1]), ("Distinct point ages", ages[2])]
    parameter_rows = sorted(_flatten(parameters).items())
    where = repo_id or f"data/output/{name}"  # the Hub repository, or the local folder (default --output-dir)
    layout = "\n".join(f"- `{s.name}`: `{s.repo_dir}/{CHUNK_GLOB}` ({s.rows:,} cells)" for s in splits) or "- no split holds any cell"
    body = f"""# {repo_id or name}

Cell sentences for ageing research, made by `scrna_assets` from one single-cell `.h5ad` file.

{_source_section(details, _organisms(files, source))}

## Files

{layout}

```python
from datasets import load_dataset

dataset = load_dataset("{where}")
```

## License

{_license_section(license_id)}

## Citation

{_citation_section(source)}

## How the data were made

{_matrix_sentence(figures, parameters)}
{_sentence_rule(parameters)}
{_age_rules(figures, parameters)}
{_split_sentence(splits, figures, parameters)}
- All `obs` columns of the source file are kept (renamed `obs_<name>` where a name clashes).

## Limitations

{_limitations(figures)}

## Figures

{_table(figure_rows, ("figure", "value"))}

## Processing parameters

{_table(parameter_rows, ("parameter", "value")) if parameter_rows else "Not recorded."}
"""
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def write_dataset_card(folder: Path, details: dict[str, Any], name: str) -> Path:
    """``folder/README.md``, so ``datasets.load_dataset(folder)`` loads the splits the card declares."""
    path = folder / CARD_FILE
    write_bytes_atomic(path, str(dataset_card(folder, details, name=name)).encode("utf-8"))
    return path

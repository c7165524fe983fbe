"""Step 2: stream an h5ad file into parquet chunks of cell sentences plus every obs column."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from scrna_assets.core.gene_tokens import GeneTokens, assign_gene_tokens
from scrna_assets.core.h5ad_reader import H5adSource
from scrna_assets.core.parquet_io import ChunkWriter
from scrna_assets.core.sentences import build_sentences

RESERVED_COLUMNS = ("cell_id", "dataset", "cell_sentence", "n_genes", "age")


@dataclass
class ConvertResult:
    n_cells: int
    n_vars: int
    matrix: str
    matrix_encoding: str
    chunk_files: list[Path]
    empty_sentences: int
    gene_counts: dict[str, int] = field(default_factory=dict)


def output_column_names(obs_columns: list[str]) -> dict[str, str]:
    """obs column -> output name; a clash with our own columns becomes ``obs_<name>``."""
    taken = set(RESERVED_COLUMNS) | set(obs_columns)
    renamed: dict[str, str] = {}
    for name in obs_columns:
        target = name
        if name in RESERVED_COLUMNS:
            target = f"obs_{name}"
            while target in taken:
                target = f"obs_{target}"
            taken.add(target)
        renamed[name] = target
    return renamed


def convert_h5ad(
    source_path: Path,
    dataset: str,
    out_folder: Path,
    ensembl_to_symbol: dict[str, str],
    chunk_size: int,
    top_genes: int,
    compression: str,
    matrix: str = "auto",
) -> ConvertResult:
    """Write ``out_folder/chunk_NNNN.parquet``; memory stays bounded by ``chunk_size`` cells."""
    with H5adSource(source_path, matrix) as source:
        tokens: GeneTokens = assign_gene_tokens(source.read_var(), ensembl_to_symbol)
        vocabulary = pa.array(tokens.vocabulary, type=pa.string())
        names = output_column_names(source.obs.columns)
        writer = ChunkWriter(out_folder, compression, chunk_size)
        empty = 0
        for chunk in source.iter_chunks(chunk_size, spill_dir=out_folder.parent):
            sentences, n_genes = build_sentences(chunk.matrix, tokens.token_index, vocabulary, top_genes)
            empty += int(np.count_nonzero(n_genes == 0))
            columns: dict[str, pa.Array] = {
                "cell_id": source.obs.index(chunk.start, chunk.stop),
                "dataset": pa.array([dataset] * (chunk.stop - chunk.start), type=pa.string()),
            }
            for name, array in source.obs.read(chunk.start, chunk.stop).items():
                columns[names[name]] = array
            columns["cell_sentence"] = sentences
            columns["n_genes"] = pa.array(n_genes, type=pa.int32())
            writer.write(pa.table(columns))
        files = writer.close(schema=_empty_schema(source, names))
        return ConvertResult(
            n_cells=source.n_obs,
            n_vars=source.n_vars,
            matrix=source.matrix_name,
            matrix_encoding=source.encoding,
            chunk_files=files,
            empty_sentences=empty,
            gene_counts=tokens.counts(),
        )


def _empty_schema(source: H5adSource, names: dict[str, str]) -> pa.Schema:
    """Schema of a file with no cells, so a 0-cell input still yields a readable chunk."""
    fields = [pa.field("cell_id", pa.string()), pa.field("dataset", pa.string())]
    fields += [pa.field(names[n], source.obs.column(n, 0, 0).type) for n in source.obs.columns]
    fields += [pa.field("cell_sentence", pa.string()), pa.field("n_genes", pa.int32())]
    return pa.schema(fields)

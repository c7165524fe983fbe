"""Step 2: stream an h5ad file into parquet chunks of cell sentences plus every obs column.

One pass over the file. Per chunk: CSR rows read into reused buffers, sentences ranked and
joined by compiled loops (``sentences.SentenceBuilder``, on up to two threads), obs slices read,
and parquet files encoded on background threads while the next chunk is prepared (at most
``writer_threads`` files in flight, so memory stays bounded by a few chunks). Output bytes do not
depend on the number of threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from scrna_assets.core.gene_tokens import GeneTokens, assign_gene_tokens
from scrna_assets.core.h5ad_reader import H5adSource
from scrna_assets.core.parquet_io import ChunkWriter
from scrna_assets.core.sentences import SentenceBuilder, default_threads, load_compiled

RESERVED_COLUMNS = ("cell_id", "dataset", "cell_sentence", "n_genes", "age")
# Files are encoded and written (zstd is most of the work) on two background threads while the
# next chunk is built: three chunks in memory at most. One writer thread is ~25% slower on two
# cores and saves one chunk of memory (~175 MB at 10,000 cells x 2,000 genes); a third gains nothing.
WRITER_THREADS = 2


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
    threads: int | None = None,
    writer_threads: int = WRITER_THREADS,
) -> ConvertResult:
    """Write ``out_folder/chunk_NNNN.parquet``; memory stays bounded by ``chunk_size`` cells.

    ``threads``: threads for ranking (default: the CPUs available, at most 2); ``writer_threads``:
    files encoded and written at once in the background. The output is the same for any values."""
    threads = default_threads() if threads is None else max(1, int(threads))
    with H5adSource(source_path, matrix) as source:
        # the compiled ranking loops load on a background thread while var and the first chunk are read
        load_compiled(source.matrix_node["indices"].dtype.newbyteorder("=") if source.encoding == "csr" else np.int32)
        tokens: GeneTokens = assign_gene_tokens(source.read_var(), ensembl_to_symbol)
        vocabulary = pa.array(tokens.vocabulary, type=pa.string())
        names = output_column_names(source.obs.columns)
        empty = 0
        # sentence buffers kept for reuse: one per writer thread. A third chunk alive at once (the
        # one being built while two are written) gets a fresh buffer: keeping three costs ~130 MB
        # more peak RSS for little less time.
        with (
            SentenceBuilder(tokens.token_index, vocabulary, top_genes, threads, buffers=max(1, writer_threads)) as builder,
            ChunkWriter(out_folder, compression, chunk_size, workers=max(1, writer_threads)) as writer,
        ):
            for part in source.iter_csr_parts(chunk_size, spill_dir=out_folder.parent):
                n_rows = part.stop - part.start
                sentences, n_genes = builder.build(part.indptr, part.indices, part.data, overwrite_indices=True)
                empty += int(np.count_nonzero(n_genes == 0))
                columns: dict[str, pa.Array] = {
                    "cell_id": source.obs.index(part.start, part.stop),
                    "dataset": pa.array([dataset] * n_rows, type=pa.string()),
                }
                for name, array in source.obs.read(part.start, part.stop).items():
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

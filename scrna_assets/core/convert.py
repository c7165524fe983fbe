"""Step 2: stream an h5ad file into parquet chunks of cell sentences plus every obs column.

One pass over the file. Per chunk: CSR rows read into reused buffers, sentences ranked and
joined by compiled loops (``sentences.SentenceBuilder``, on up to two threads), obs slices read,
and parquet files encoded on background threads while the next chunk is prepared (at most
``writer_threads`` files in flight, so memory stays bounded by a few chunks). Output bytes do not
depend on the number of threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from scrna_assets.core.gene_tokens import GeneTokens, assign_gene_tokens
from scrna_assets.core.h5ad_reader import H5adSource
from scrna_assets.core.parquet_io import ChunkWriter
from scrna_assets.core.sentences import (
    DEFAULT_SEED,
    DEFAULT_TIE_BREAK,
    TIE_BREAKS,
    SentenceBuilder,
    cell_tie_keys,
    default_threads,
    load_compiled,
)

RESERVED_COLUMNS = ("cell_id", "dataset", "cell_sentence", "n_genes", "age", "age_min", "age_max")
ORGANISM_COLUMN, ORGANISM_ID_COLUMN = "organism", "organism_ontology_term_id"
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
    value_dtype: str = ""
    """Stored dtype of the matrix's values (``H5adSource.value_dtype``)."""
    integer_values: bool = True
    """Every value read was a whole number (``H5adSource.integer_values`` after the last chunk)."""
    source_facts: dict[str, str] = field(default_factory=dict)
    """Dataset-wide text facts of ``uns`` (``H5adSource.uns_facts``)."""


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
    seed: int = DEFAULT_SEED,
    tie_break: str = DEFAULT_TIE_BREAK,
    progress: Callable[[int, int], None] | None = None,
) -> ConvertResult:
    """Write ``out_folder/chunk_NNNN.parquet``; memory stays bounded by ``chunk_size`` cells.

    ``threads``: threads for ranking (default: the CPUs available, at most 2); ``writer_threads``:
    files encoded and written at once in the background. The output is the same for any values
    of these and of ``chunk_size``.

    ``tie_break``: order of genes with equal values in a cell. ``"random"``: by tie key, a
    pseudo-random permutation that is a pure function of (``seed``, ``dataset``, cell id, gene
    token) (``sentences.cell_tie_keys``); ``"position"``: by var position.

    ``progress(cells_done, cells_total)``, if given, is called with ``(0, n_obs)`` once the file is
    open (so a progress bar knows the total before the first chunk), once per chunk handed to the
    writer, and the last call, ``(n_obs, n_obs)``, only once every file is on disk (so a 0-cell
    input gives one call, ``(0, 0)``). It changes nothing in the output."""
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {', '.join(TIE_BREAKS)}, not {tie_break!r}")
    threads = default_threads() if threads is None else max(1, int(threads))
    with H5adSource(source_path, matrix) as source:
        # the compiled ranking loops load on a background thread while var and the first chunk are read
        load_compiled(source.matrix_node["indices"].dtype.newbyteorder("=") if source.encoding == "csr" else np.int32, tie_break)
        tokens: GeneTokens = assign_gene_tokens(source.read_var(), ensembl_to_symbol)
        vocabulary = pa.array(tokens.vocabulary, type=pa.string())
        names = output_column_names(source.obs.columns)
        facts = source.uns_facts()
        if progress is not None and source.n_obs:
            progress(0, source.n_obs)
        empty = 0
        # sentence buffers kept for reuse: one per writer thread. A third chunk alive at once (the
        # one being built while two are written) gets a fresh buffer: keeping three costs ~130 MB
        # more peak RSS for little less time.
        with (
            SentenceBuilder(
                tokens.token_index, vocabulary, top_genes, threads, buffers=max(1, writer_threads), tie_break=tie_break
            ) as builder,
            ChunkWriter(out_folder, compression, chunk_size, workers=max(1, writer_threads)) as writer,
        ):
            for part in source.iter_csr_parts(chunk_size, spill_dir=out_folder.parent):
                n_rows = part.stop - part.start
                cell_ids = source.obs.index(part.start, part.stop)
                cell_keys = cell_tie_keys(cell_ids, seed, dataset) if tie_break == "random" else None
                sentences, n_genes = builder.build(part.indptr, part.indices, part.data, overwrite_indices=True, cell_keys=cell_keys)
                empty += int(np.count_nonzero(n_genes == 0))
                columns: dict[str, pa.Array] = {
                    "cell_id": cell_ids,
                    "dataset": pa.array([dataset] * n_rows, type=pa.string()),
                }
                obs = source.obs.read(part.start, part.stop)
                for name, array in obs.items():
                    columns[names[name]] = array
                if ORGANISM_COLUMN not in obs:
                    columns[ORGANISM_COLUMN] = organism_column(obs.get(ORGANISM_ID_COLUMN), facts, n_rows)
                columns["cell_sentence"] = sentences
                columns["n_genes"] = pa.array(n_genes, type=pa.int32())
                writer.write(pa.table(columns))
                if progress is not None and part.stop < source.n_obs:
                    progress(part.stop, source.n_obs)
            files = writer.close(schema=_empty_schema(source, names))
            if progress is not None:
                progress(source.n_obs, source.n_obs)
        return ConvertResult(
            n_cells=source.n_obs,
            n_vars=source.n_vars,
            matrix=source.matrix_name,
            matrix_encoding=source.encoding,
            chunk_files=files,
            empty_sentences=empty,
            gene_counts=tokens.counts(),
            value_dtype=source.value_dtype,
            integer_values=source.integer_values,
            source_facts=facts,
        )


# The organisms CELLxGENE datasets come from, by NCBITaxon id (labels as in the NCBITaxon release
# cellxgene-ontology-guide ships; a test checks them there). A table, not an ontology look-up:
# loading NCBITaxon through the ontology parser takes ~14 s and ~3.2 GB of memory.
ORGANISM_LABELS = {
    "NCBITaxon:9606": "Homo sapiens", "NCBITaxon:10090": "Mus musculus", "NCBITaxon:9483": "Callithrix jacchus",
    "NCBITaxon:9541": "Macaca fascicularis", "NCBITaxon:9544": "Macaca mulatta", "NCBITaxon:9598": "Pan troglodytes",
    "NCBITaxon:9597": "Pan paniscus", "NCBITaxon:9595": "Gorilla gorilla gorilla", "NCBITaxon:9600": "Pongo pygmaeus",
    "NCBITaxon:9825": "Sus scrofa domesticus", "NCBITaxon:9823": "Sus scrofa", "NCBITaxon:10116": "Rattus norvegicus",
    "NCBITaxon:9986": "Oryctolagus cuniculus", "NCBITaxon:10029": "Cricetulus griseus", "NCBITaxon:9615": "Canis lupus familiaris",
    "NCBITaxon:9913": "Bos taurus", "NCBITaxon:9031": "Gallus gallus", "NCBITaxon:7955": "Danio rerio",
    "NCBITaxon:7227": "Drosophila melanogaster", "NCBITaxon:6239": "Caenorhabditis elegans",
}


def organism_column(term_ids: pa.Array | None, uns: dict[str, str], n_rows: int) -> pa.Array:
    """Each cell's organism when obs has no ``organism`` column: the label of its
    ``organism_ontology_term_id`` (``ORGANISM_LABELS``; null for an id not in it), else the
    dataset's ``uns["organism"]`` (CELLxGENE schema 5+ keeps it there) or the label of
    ``uns["organism_ontology_term_id"]``, else null."""
    if term_ids is not None:
        ids = term_ids.cast(pa.string()).dictionary_encode()
        labels = pa.array([ORGANISM_LABELS.get(i) for i in ids.dictionary.to_pylist()], pa.string())
        return labels.take(ids.indices)
    value = uns.get(ORGANISM_COLUMN) or ORGANISM_LABELS.get(uns.get(ORGANISM_ID_COLUMN, ""))
    return pa.array([value] * n_rows, pa.string())


def _empty_schema(source: H5adSource, names: dict[str, str]) -> pa.Schema:
    """Schema of a file with no cells, so a 0-cell input still yields a readable chunk."""
    fields = [pa.field("cell_id", pa.string()), pa.field("dataset", pa.string())]
    fields += [pa.field(names[n], source.obs.column(n, 0, 0).type) for n in source.obs.columns]
    if ORGANISM_COLUMN not in source.obs.columns:
        fields.append(pa.field(ORGANISM_COLUMN, pa.string()))
    fields += [pa.field("cell_sentence", pa.string()), pa.field("n_genes", pa.int32())]
    return pa.schema(fields)

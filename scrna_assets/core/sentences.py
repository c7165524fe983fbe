"""Turn a CSR chunk into cell sentences: expressed genes, highest value first, joined by spaces."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp


def build_sentences(
    matrix: sp.csr_matrix, token_index: np.ndarray, vocabulary: pa.Array, top_genes: int
) -> tuple[pa.Array, np.ndarray]:
    """Sentences (Arrow strings) and gene counts (int32) for every row of ``matrix``.

    A gene counts when its var row has a token and its value is > 0 (stored zeros excluded).
    Order: value descending, ties by var position ascending; at most ``top_genes`` (0 = all).
    A row with no expressed gene gets an empty sentence, never a null.
    """
    n_rows = matrix.shape[0]
    indptr = matrix.indptr.astype(np.int64)
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(indptr))
    cols = matrix.indices.astype(np.int64)
    values = matrix.data
    tokens = token_index[cols]
    keep = (values > 0) & (tokens >= 0)
    rows, cols, values, tokens = rows[keep], cols[keep], values[keep], tokens[keep]
    order = np.lexsort((cols, -values.astype(np.float64), rows))
    rows, tokens = rows[order], tokens[order]
    counts = np.bincount(rows, minlength=n_rows).astype(np.int64)
    if top_genes > 0:
        starts = np.cumsum(counts) - counts
        rank = np.arange(len(rows), dtype=np.int64) - starts[rows]
        tokens = tokens[rank < top_genes]
        counts = np.minimum(counts, top_genes)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    words = vocabulary.take(pa.array(tokens, type=pa.int32()))
    sentences = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(offsets), words), " ")
    return sentences.cast(pa.string()), counts.astype(np.int32)

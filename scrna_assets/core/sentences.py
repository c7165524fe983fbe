"""Turn a CSR chunk into cell sentences: expressed genes, highest value first, joined by spaces.

The contract: a gene counts when its var row has a token and its value is > 0 (stored zeros
excluded); order is value descending, ties by var position ascending; at most ``top_genes``
(0 = all); a row with no expressed gene gets an empty sentence, never a null; ``n_genes`` (int32)
is the number of words.

The fast path is two compiled loops (numba, no Python per cell, the GIL released):

1. per row, gather the expressed (value key, token) pairs in var order and sort them by value
   with a stable LSD radix sort on the 32-bit value key, over only the bits that vary within the
   row (keys rebased on the row's smallest; digits of up to 11 bits), so integer counts take a
   single counting pass. Stability keeps ties in var order. The kept tokens go to a scratch
   array laid out like the CSR data (or over the chunk's own indices), with the byte length of
   each sentence;
2. the sentence bytes are copied from the vocabulary straight into one Arrow data buffer whose
   offsets are the prefix sum of those lengths: no Python strings, no list arrays, no join.

Values are ranked by a 32-bit key: the IEEE bits of a float32 (monotonic for positive floats),
or the value itself for integers below 2**32; float64 values exactly representable as float32
use the float32 key. Anything else (float64 with more precision, huge integers) takes the
vectorised numpy path, which is exact for every dtype.
"""

from __future__ import annotations

import mmap
import os
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

_FLOAT_MAX_KEY = 0x7F800000  # bits of +inf: 0 < bits <= this <=> a float32 value > 0 (NaN excluded)
_INT_MAX_KEY = 0xFFFFFFFF
_MAX_STRING_BYTES = 2**31 - 1  # Arrow ``string`` offsets are int32
_PARALLEL_MIN_NNZ = 2_000_000  # below this one thread is quicker than two
_SLOT = 16  # bytes per vocabulary slot of the word copy
_MAX_DIGIT_BITS = 11  # radix digit: a 2,048-bucket histogram (8 KB) stays in L1


def _compiled(function):
    """``numba.njit(nogil=True)``, cached on disk when there is a writable place for the cache
    (next to this file, ``NUMBA_CACHE_DIR`` or the user's cache folder): loading the cache takes
    ~0.7 s, compiling ~3.5 s. Without one (read-only install and home), compile per process."""
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:
        return numba.njit(nogil=True)(function)


@_compiled
def _rank_rows(indptr, indices, keys, max_key, token_index, token_len, top_genes, row_lo, row_hi, out_tokens, n_genes, n_bytes):  # pragma: no cover - compiled
    """Rows [row_lo, row_hi): kept tokens in order to ``out_tokens[indptr[r]:]``, counts, bytes.

    ``out_tokens`` may be ``indices`` itself: a row is read whole before it is written."""
    longest = 0
    for r in range(row_lo, row_hi):
        longest = max(longest, indptr[r + 1] - indptr[r])
    key_a = np.empty(longest, np.uint32)
    key_b = np.empty(longest, np.uint32)
    tok_a = np.empty(longest, np.int32)
    tok_b = np.empty(longest, np.int32)
    cols = np.empty(longest, np.int64)
    hist = np.empty(1 << _MAX_DIGIT_BITS, np.int32)
    for r in range(row_lo, row_hi):
        lo = indptr[r]
        hi = indptr[r + 1]
        m = 0
        in_order = True
        last = -1
        any_bits = np.uint32(0)
        all_bits = np.uint32(0xFFFFFFFF)
        k_min = np.uint32(0xFFFFFFFF)
        k_max = np.uint32(0)
        for p in range(lo, hi):
            b = keys[p]
            if b == 0 or b > max_key:
                continue
            c = np.int64(indices[p])
            t = token_index[c]
            if t < 0:
                continue
            if c < last:
                in_order = False
            last = c
            k = ~b  # ascending inverted key = value descending
            key_a[m] = k
            tok_a[m] = t
            cols[m] = c
            any_bits |= k
            all_bits &= k
            k_min = min(k_min, k)
            k_max = max(k_max, k)
            m += 1
        if not in_order:  # unsorted CSR row: put it in var order first (stable, like lexsort)
            order = np.argsort(cols[:m], kind="mergesort")
            for i in range(m):
                key_b[i] = key_a[order[i]]
                tok_b[i] = tok_a[order[i]]
            key_a, key_b = key_b, key_a
            tok_a, tok_b = tok_b, tok_a
        kept = m if top_genes <= 0 else min(m, top_genes)
        size = 0
        varying = any_bits ^ all_bits
        if m > 1 and varying != 0:
            # LSD radix sort of (key - k_min) over its bits that are not equal in every key: the
            # bits below the lowest varying bit are equal, and nothing is above the span's top.
            # Integer counts (float32) span ~9 bits: one counting pass.
            low = 0
            while (varying >> low) & 1 == 0:
                low += 1
            span = k_max - k_min
            high = 31
            while (span >> high) & 1 == 0:
                high -= 1
            for i in range(m):
                key_a[i] -= k_min
            digit = _MAX_DIGIT_BITS if m >= 512 else 8  # small rows: a smaller histogram to clear
            shift = low
            while shift <= high:
                width = min(digit, high - shift + 1)
                mask = np.uint32((1 << width) - 1)
                buckets = 1 << width
                hist[:buckets] = 0
                for i in range(m):
                    hist[(key_a[i] >> shift) & mask] += 1
                total = 0
                for v in range(buckets):
                    count = hist[v]
                    hist[v] = total
                    total += count
                if shift + width > high:  # last pass: tokens go straight to the output
                    for i in range(m):
                        slot = (key_a[i] >> shift) & mask
                        dest = hist[slot]
                        hist[slot] = dest + 1
                        if dest < kept:
                            t = tok_a[i]
                            out_tokens[lo + dest] = t
                            size += token_len[t]
                else:
                    for i in range(m):
                        k = key_a[i]
                        slot = (k >> shift) & mask
                        dest = hist[slot]
                        hist[slot] = dest + 1
                        key_b[dest] = k
                        tok_b[dest] = tok_a[i]
                    key_a, key_b = key_b, key_a
                    tok_a, tok_b = tok_b, tok_a
                shift += width
        else:  # zero or one gene, or all values equal: var order is the order
            for i in range(kept):
                t = tok_a[i]
                out_tokens[lo + i] = t
                size += token_len[t]
        n_genes[r] = kept
        n_bytes[r] = size + kept - 1 if kept > 0 else 0


@intrinsic
def _copy16(typingctx, dst, dst_pos, src, src_pos):  # pragma: no cover - compiled
    """``dst[dst_pos:dst_pos+16] = src[src_pos:src_pos+16]`` as one unaligned 16-byte move."""
    signature = types.void(dst, types.intp, src, types.intp)

    def codegen(context, builder, sig, args):
        dst_array = context.make_array(sig.args[0])(context, builder, args[0])
        src_array = context.make_array(sig.args[2])(context, builder, args[2])
        cgutils.raw_memcpy(
            builder,
            builder.gep(dst_array.data, [args[1]]),
            builder.gep(src_array.data, [args[3]]),
            context.get_constant(types.intp, _SLOT),
            1,
        )
        return context.get_dummy_value()

    return signature, codegen


@_compiled
def _write_bytes(indptr, out_tokens, n_genes, offsets, vocab_offsets, vocab_bytes, slots, row_lo, row_hi, out):  # pragma: no cover - compiled
    """Copy the words of rows [row_lo, row_hi) into ``out`` at ``offsets``, single spaces between.

    ``slots`` holds every token shorter than 16 bytes followed by a space, in 16-byte slots: such
    a word (and its space) is one 16-byte move when that stays inside the row's bytes, so rows
    written by different threads never overlap; other words are copied byte by byte."""
    for r in range(row_lo, row_hi):
        p = offsets[r]
        end = offsets[r + 1]
        base = indptr[r]
        k = n_genes[r]
        for i in range(k):
            t = out_tokens[base + i]
            start = vocab_offsets[t]
            length = vocab_offsets[t + 1] - start
            if length < _SLOT and p + _SLOT <= end:
                _copy16(out, p, slots, t * _SLOT)
                p += length + 1
            else:
                for q in range(length):
                    out[p + q] = vocab_bytes[start + q]
                p += length
                if i + 1 < k:
                    out[p] = 32
                    p += 1


def _value_keys(data: np.ndarray) -> tuple[np.ndarray, int] | None:
    """32-bit ranking keys of the values and the largest key of an expressed value, or None
    when the values do not fit a 32-bit key without changing their order."""
    if data.dtype == np.float32:
        return data.view(np.uint32), _FLOAT_MAX_KEY
    if data.dtype == np.float16:
        return data.astype(np.float32).view(np.uint32), _FLOAT_MAX_KEY
    if data.dtype == np.float64:
        with np.errstate(over="ignore", invalid="ignore"):
            single = data.astype(np.float32)
            same = (single == data) | np.isnan(data)  # NaN is never expressed, whatever its key
        if not same.all():
            return None
        return single.view(np.uint32), _FLOAT_MAX_KEY
    if data.dtype.kind in "iub":
        if data.size and data.max() > _INT_MAX_KEY:
            return None
        return np.where(data > 0, data, 0).astype(np.uint32), _INT_MAX_KEY
    return None


class SentenceBuilder:
    """Builds the sentences of successive CSR chunks for one var table.

    Holds the vocabulary as flat UTF-8 bytes and a scratch array reused from chunk to chunk.
    With ``threads`` > 1, a large chunk is cut into row ranges ranked on that many threads;
    each range writes only its own rows, so the output does not depend on the thread count.
    """

    def __init__(
        self, token_index: np.ndarray, vocabulary: pa.Array, top_genes: int, threads: int = 1, buffers: int = 2
    ) -> None:
        """``buffers``: sentence buffers kept for reuse once their chunk is dropped (each holds a
        chunk's worth of memory while idle); a chunk built while all of them are still in use gets
        a fresh buffer, returned to the OS when dropped."""
        self.token_index = np.ascontiguousarray(token_index, dtype=np.int32)
        self.vocabulary = vocabulary
        self.top_genes = int(top_genes)
        self.threads = max(1, int(threads))
        self._fast_vocabulary = vocabulary.null_count == 0 and (
            pa.types.is_string(vocabulary.type) or pa.types.is_large_string(vocabulary.type)
        )
        if self._fast_vocabulary:
            large = vocabulary.cast(pa.large_string())
            offsets = np.frombuffer(large.buffers()[1], dtype=np.int64)[large.offset : large.offset + len(large) + 1]
            data = large.buffers()[2]
            self.vocab_bytes = np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, np.uint8)
            self.vocab_offsets = np.ascontiguousarray(offsets)
            self.token_len = np.diff(self.vocab_offsets)
            self.slots = _vocabulary_slots(self.vocab_offsets, self.vocab_bytes)
        self._scratch = np.empty(0, dtype=np.int32)
        self._buffers = _BufferPool(buffers)
        self._pool: ThreadPoolExecutor | None = None
        self.stage_seconds = {"rank": 0.0, "strings": 0.0}
        """Wall seconds spent ranking and building strings so far (for profiling)."""

    def close(self) -> None:
        self._buffers.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> SentenceBuilder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def build_csr(self, matrix: sp.csr_matrix) -> tuple[pa.Array, np.ndarray]:
        return self.build(matrix.indptr, matrix.indices, matrix.data)

    def build(
        self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, overwrite_indices: bool = False
    ) -> tuple[pa.Array, np.ndarray]:
        """Sentences (Arrow ``string``) and gene counts (int32) of CSR rows.

        ``indptr`` may start at any offset into ``indices``/``data`` (a row slice of a larger
        matrix); only ``indptr[0]:indptr[-1]`` is read. With ``overwrite_indices`` the ranked
        tokens are kept in ``indices`` itself (each row only overwrites its own entries, after
        reading them) instead of a scratch array: a chunk's worth of memory less."""
        n_rows = len(indptr) - 1
        end = int(indptr[-1]) if len(indptr) else 0
        data, indices = data[:end], indices[:end]  # buffers may be longer than this chunk's entries
        if not data.dtype.isnative or not indices.dtype.isnative:  # the compiled loops need native order
            data = data.astype(data.dtype.newbyteorder("="))
            indices = indices.astype(indices.dtype.newbyteorder("="))
        keys = _value_keys(data) if self._fast_vocabulary else None
        if keys is None or n_rows == 0:
            matrix = _as_csr(indptr, indices, data, n_rows, len(self.token_index))
            return _build_sentences_numpy(matrix, self.token_index, self.vocabulary, self.top_genes)
        value_keys, max_key = keys
        indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        nnz = int(indptr[-1])
        if overwrite_indices and indices.dtype in (np.int32, np.int64) and indices.flags.writeable:
            ranked = indices
        else:
            if self._scratch.size < nnz:
                self._scratch = np.empty(max(nnz, int(self._scratch.size * 1.1)), dtype=np.int32)
            ranked = self._scratch
        n_genes = np.empty(n_rows, dtype=np.int32)
        n_bytes = np.empty(n_rows, dtype=np.int64)
        ranges = self._row_ranges(indptr, n_rows)
        started = time.perf_counter()
        self._run(_rank_rows, [
            (indptr, indices, value_keys, max_key, self.token_index, self.token_len, self.top_genes, lo, hi,
             ranked, n_genes, n_bytes)
            for lo, hi in ranges
        ])
        ranked_at = time.perf_counter()
        self.stage_seconds["rank"] += ranked_at - started
        offsets = np.empty(n_rows + 1, dtype=np.int64)
        offsets[0] = 0
        np.cumsum(n_bytes, out=offsets[1:])
        total = int(offsets[-1])
        if total > _MAX_STRING_BYTES:
            raise ValueError(
                f"a chunk's sentences take {total} bytes, more than an Arrow string array holds (2 GiB): "
                "use a smaller --chunk-size"
            )
        # a buffer of an earlier chunk that nothing references any more: its pages are resident
        # already (a fresh 175 MB buffer costs ~43,000 page faults, ~0.15-0.25 s of CPU)
        out_buffer, out = self._buffers.take(total)
        self._run(_write_bytes, [
            (indptr, ranked, n_genes, offsets, self.vocab_offsets, self.vocab_bytes, self.slots, lo, hi, out)
            for lo, hi in ranges
        ])
        del out
        sentences = pa.StringArray.from_buffers(n_rows, pa.py_buffer(offsets.astype(np.int32)), out_buffer)
        self.stage_seconds["strings"] += time.perf_counter() - ranked_at
        return sentences, n_genes

    def _row_ranges(self, indptr: np.ndarray, n_rows: int) -> list[tuple[int, int]]:
        nnz = int(indptr[-1] - indptr[0])
        parts = self.threads if nnz >= _PARALLEL_MIN_NNZ else 1
        if parts == 1:
            return [(0, n_rows)]
        cuts = np.searchsorted(indptr, indptr[0] + np.arange(1, parts) * (nnz / parts)).clip(0, n_rows)
        bounds = [0, *sorted(int(c) for c in cuts), n_rows]
        return [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]

    def _run(self, function, calls: list[tuple]) -> None:
        if len(calls) == 1:
            function(*calls[0])
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="sentences")
        for future in [self._pool.submit(function, *args) for args in calls]:
            future.result()


class _Lease:
    """Keeps a slab alive while an Arrow buffer over it exists (the buffer's ``base``)."""

    __slots__ = ("slab", "__weakref__")

    def __init__(self, slab: np.ndarray) -> None:
        self.slab = slab


class _BufferPool:
    """Sentence data buffers reused from chunk to chunk.

    Each buffer handed out is an Arrow buffer over a slab whose ``base`` is a ``_Lease``: the slab
    is free again once Arrow (the table, a writer thread) has dropped every buffer over it, i.e.
    once the lease is gone. Reusing a slab skips faulting in a fresh chunk's worth of pages (a
    175 MB chunk: ~43,000 faults). At most ``keep`` slabs are kept; when all are in use, a
    request gets a slab that is not kept (unmapped as soon as its chunk is dropped), so no more
    than ``keep`` idle slabs stay resident. A free slab too small for a request is replaced."""

    def __init__(self, keep: int) -> None:
        self.keep = max(1, keep)
        self._slabs: list[tuple[np.ndarray, weakref.ref | None]] = []

    def take(self, size: int) -> tuple[pa.Buffer, np.ndarray]:
        """An Arrow buffer of ``size`` bytes and a writable numpy view of the same memory."""
        if size == 0:
            return pa.allocate_buffer(0), np.empty(0, dtype=np.uint8)
        free = [i for i, (_, lease) in enumerate(self._slabs) if lease is None or lease() is None]
        fitting = [i for i in free if self._slabs[i][0].size >= size + _ALIGN]
        if fitting:
            index = min(fitting, key=lambda i: self._slabs[i][0].size)
            slab = self._slabs[index][0]
        else:
            if free:  # too small: replace it rather than keep one more
                self._slabs.pop(min(free, key=lambda i: self._slabs[i][0].size))
            slab = _new_slab(int(size * 1.02) + _ALIGN)  # headroom: the next chunks are a little longer or shorter
            index = len(self._slabs)
            if index < self.keep:
                self._slabs.append((slab, None))
            else:
                index = -1
        lease = _Lease(slab)
        if index >= 0:
            self._slabs[index] = (slab, weakref.ref(lease))
        address = slab.ctypes.data
        offset = -address % _ALIGN
        return pa.foreign_buffer(address + offset, size, base=lease), slab[offset : offset + size]

    def clear(self) -> None:
        self._slabs.clear()


_ALIGN = 64  # Arrow's buffer alignment


def _new_slab(size: int) -> np.ndarray:
    """``size`` bytes of anonymous memory, unmapped when the last view is gone, its pages faulted
    in by the kernel in one call (``MAP_POPULATE``: half the system time of touching them one by
    one). Not numpy's allocation: numpy asks for transparent huge pages above 4 MB, and with THP
    in ``madvise`` mode the kernel may compact memory to fault them in (~0.5 s of system time
    for a 175 MB buffer, against ~0.08 s here)."""
    flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_ANONYMOUS", 0x20) | getattr(mmap, "MAP_POPULATE", 0)
    try:
        memory = mmap.mmap(-1, size, flags=flags)
    except (OSError, TypeError, ValueError):  # pragma: no cover - not Linux
        memory = mmap.mmap(-1, size)
    return np.frombuffer(memory, dtype=np.uint8)


def load_compiled(indices_dtype: np.dtype | type = np.int32) -> threading.Thread:
    """Load (from numba's cache, ~0.7 s) the compiled loops ``build`` will call on CSR indices of
    ``indices_dtype``, on a background thread, so the loading overlaps the caller's own start
    (opening the file, reading var and the first chunk) instead of delaying the first chunk.
    Calling the loops early changes nothing else: ``build`` simply finds them loaded (or waits
    for numba's compiler lock). Returns the started thread."""
    thread = threading.Thread(target=_call_compiled, args=(np.dtype(indices_dtype),), name="load-compiled", daemon=True)
    thread.start()
    return thread


def _call_compiled(indices_dtype: np.dtype) -> None:
    """Both loops on a one-row, one-gene CSR with the argument types ``build`` passes."""
    try:
        if indices_dtype not in (np.dtype(np.int32), np.dtype(np.int64)):
            return
        indptr = np.array([0, 1], dtype=np.int64)
        indices = np.zeros(1, dtype=indices_dtype)
        keys = np.ones(1, dtype=np.uint32)
        token_index = np.zeros(1, dtype=np.int32)
        token_len = np.ones(1, dtype=np.int64)
        n_genes = np.empty(1, dtype=np.int32)
        n_bytes = np.empty(1, dtype=np.int64)
        _rank_rows(indptr, indices, keys, _FLOAT_MAX_KEY, token_index, token_len, 0, 0, 1, indices, n_genes, n_bytes)
        vocab_offsets = np.array([0, 1], dtype=np.int64)
        vocab_bytes = np.full(1, 65, dtype=np.uint8)
        slots = _vocabulary_slots(vocab_offsets, vocab_bytes)
        offsets = np.array([0, 1], dtype=np.int64)
        out = np.empty(1, dtype=np.uint8)
        _write_bytes(indptr, indices, n_genes, offsets, vocab_offsets, vocab_bytes, slots, 0, 1, out)
    except Exception:  # pragma: no cover - only a head start: ``build`` loads (and reports) on its own
        pass


def _vocabulary_slots(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Each token shorter than 16 bytes plus a space, zero-padded to 16 bytes (longer: zeros)."""
    lengths = np.diff(offsets)
    slots = np.zeros((len(lengths), _SLOT), dtype=np.uint8)
    short = np.flatnonzero(lengths < _SLOT)
    for column in range(_SLOT - 1):
        rows = short[lengths[short] > column]
        slots[rows, column] = data[offsets[rows] + column]
    slots[short, lengths[short]] = 32
    return slots.reshape(-1)


def _as_csr(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, n_rows: int, n_cols: int) -> sp.csr_matrix:
    indptr = np.asarray(indptr, dtype=np.int64)
    lo, hi = int(indptr[0]), int(indptr[-1])
    return sp.csr_matrix((data[lo:hi], indices[lo:hi], indptr - lo), shape=(n_rows, n_cols))


def default_threads() -> int:
    """Threads for ranking: the CPUs this process may use, at most 2 (more gains little)."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        available = os.cpu_count() or 1
    return max(1, min(2, available))


def build_sentences(
    matrix: sp.csr_matrix, token_index: np.ndarray, vocabulary: pa.Array, top_genes: int
) -> tuple[pa.Array, np.ndarray]:
    """Sentences (Arrow strings) and gene counts (int32) for every row of ``matrix``.

    A gene counts when its var row has a token and its value is > 0 (stored zeros excluded).
    Order: value descending, ties by var position ascending; at most ``top_genes`` (0 = all).
    A row with no expressed gene gets an empty sentence, never a null.
    """
    with SentenceBuilder(token_index, vocabulary, top_genes) as builder:
        return builder.build_csr(matrix)


def _build_sentences_numpy(
    matrix: sp.csr_matrix, token_index: np.ndarray, vocabulary: pa.Array, top_genes: int
) -> tuple[pa.Array, np.ndarray]:
    """The vectorised numpy path: one lexsort per chunk. Exact for every dtype; slower."""
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

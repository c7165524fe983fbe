"""Turn a CSR chunk into cell sentences: expressed genes, highest value first, joined by spaces.

The contract: a gene counts when its var row has a token and its value is > 0 (stored zeros
excluded); order is value descending, then within a group of equal values (the tie-break, see
below); at most ``top_genes`` (0 = all), cut after ordering; a row with no expressed gene gets an
empty sentence, never a null; ``n_genes`` (int32) is the number of words.

Tie-break (``TIE_BREAKS``): in count data most words sit in a group of equal values, so their
order is not a detail. ``"position"``: var position ascending. ``"random"`` (the default): tie key
ascending, then var position (only for equal tie keys: practically never), where

* cell key (uint64) = ``blake2b(f"{seed}\\x1f{dataset}\\x1f{cell_id}".encode(), digest_size=8)``
  read little-endian (a null cell id: the empty string), ``cell_tie_keys``;
* gene key (uint64) = ``blake2b(token.encode(), digest_size=8)`` read little-endian, ``gene_tie_keys``;
* tie key = splitmix64 finalizer of (cell key XOR gene key), mod 2**64: ``z = x +
  0x9E3779B97F4A7C15; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) *
  0x94D049BB133111EB; z ^ (z >> 31)``, ``tie_keys``.

So a cell's sentence is a pure function of its values, its tokens, the seed, the dataset name and
its id: the same whatever the chunk size, thread count, file or var order; two tied genes come
out in either order in about half of the cells where they tie.

The fast path is two compiled loops (numba, no Python per cell, the GIL released):

1. per row, gather the expressed (value key, token) pairs in var order and sort them by value
   with a stable LSD radix sort on the 32-bit value key, over only the bits that vary within the
   row (keys rebased on the row's smallest; digits of up to 11 bits), so integer counts take a
   single counting pass. Stability keeps ties in var order. With the random tie-break, a row
   whose values take one counting pass is ordered by value and tie key together: the count of
   the values places each group, one scatter puts each gene in a fine bucket of its group by the
   high bits of its tie key (uniform hashes: ~0.5 gene per bucket), and a bubble pass plus an
   insertion sort finish the groups that reach into the kept genes; other rows sort by value
   first, then each such tie group. The kept tokens go to a scratch array laid out like the
   CSR data (or over the chunk's own indices), with the byte length of each sentence;
2. the sentence bytes are copied from the vocabulary straight into one Arrow data buffer whose
   offsets are the prefix sum of those lengths: no Python strings, no list arrays, no join.

Values are ranked by a 32-bit key: the IEEE bits of a float32 (monotonic for positive floats),
or the value itself for integers below 2**32; float64 values exactly representable as float32
use the float32 key. Anything else (float64 with more precision, huge integers) takes the
vectorised numpy path, which is exact for every dtype and orders ties the same way.
"""

from __future__ import annotations

import hashlib
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
TIE_BREAKS = ("random", "position")
"""Orders within a group of equal values: a seeded pseudo-random permutation, or var position."""
DEFAULT_TIE_BREAK = "random"
DEFAULT_SEED = 42


def _compiled(function):
    """``numba.njit(nogil=True)``, cached on disk when there is a writable place for the cache
    (next to this file, ``NUMBA_CACHE_DIR`` or the user's cache folder): loading the cache takes
    ~0.7 s, compiling ~3.5 s. Without one (read-only install and home), compile per process."""
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:
        return numba.njit(nogil=True)(function)


_MIX_ADD = np.uint64(0x9E3779B97F4A7C15)
_MIX_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_MUL2 = np.uint64(0x94D049BB133111EB)
_HIGH32 = np.uint64(0xFFFFFFFF00000000)
_LOW32 = np.uint64(0xFFFFFFFF)
_FINE = 2  # fine buckets per tied gene: ~10 % of neighbours out of order (1: ~18 %, 4: ~6 %, more to clear)
_SMALL_GROUP = 16  # tie groups up to this size skip the bucket pass


@numba.njit(nogil=True, inline="always")
def _mix64(x):  # pragma: no cover - compiled
    """The splitmix64 finalizer (mod 2**64)."""
    z = x + _MIX_ADD
    z = (z ^ (z >> np.uint64(30))) * _MIX_MUL1
    z = (z ^ (z >> np.uint64(27))) * _MIX_MUL2
    return z ^ (z >> np.uint64(31))


@numba.njit(nogil=True, inline="always")
def _hash_ties(n, toks, first, cell, gene_keys, ties):  # pragma: no cover - compiled
    """``ties[i]`` = tie key of ``toks[first + i]`` for i < n: splitmix64(cell key ^ gene key)."""
    for i in range(n):  # two loops: the gather stays scalar, the hash is vectorised
        ties[i] = gene_keys[np.intp(toks[first + i])]
    for i in range(n):
        ties[i] = _mix64(cell ^ ties[i])


@numba.njit(nogil=True)
def _sort_packed(lo, hi, packed, ties):  # pragma: no cover - compiled
    """Sort the nearly sorted ``packed[lo:hi]`` (words: a tie key's high 32 bits << 32 | its index
    into ``ties``) by full tie key, then index.

    One branch-free bubble pass (orders every pair of neighbours that share a bucket), then an
    insertion sort with ~1 % of its words out of place, which notes whether two equal high halves
    end up side by side; only then (two keys of a group agreeing on 32 bits: rare) each run of
    equal high halves is sorted again by (``ties[index]``, index)."""
    carried = packed[lo]
    for i in range(lo + 1, hi):
        w = packed[i]
        packed[i - 1] = min(carried, w)
        carried = max(carried, w)
    packed[hi - 1] = carried
    collision = False
    for i in range(lo + 1, hi):
        w = packed[i]
        high = w >> np.uint64(32)
        if high > (packed[i - 1] >> np.uint64(32)):
            continue
        j = i - 1
        while j >= lo and packed[j] > w:
            packed[j + 1] = packed[j]
            j -= 1
        packed[j + 1] = w
        if (j >= lo and (packed[j] >> np.uint64(32)) == high) or (j + 2 <= i and (packed[j + 2] >> np.uint64(32)) == high):
            collision = True
    if not collision:
        return
    i = lo + 1
    while i < hi:
        if (packed[i] >> np.uint64(32)) != (packed[i - 1] >> np.uint64(32)):
            i += 1
            continue
        first = i - 1
        last = i + 1
        while last < hi and (packed[last] >> np.uint64(32)) == (packed[first] >> np.uint64(32)):
            last += 1
        for a in range(first + 1, last):  # by full key; equal keys stay in index order
            w = packed[a]
            t = ties[np.intp(w & _LOW32)]
            b = a - 1
            while b >= first and ties[np.intp(packed[b] & _LOW32)] > t:
                packed[b + 1] = packed[b]
                b -= 1
            packed[b + 1] = w
        i = last


@numba.njit(nogil=True, inline="always")
def _bucket_pass(n, group_of, starts, sizes, ties, packed, slots, fine):  # pragma: no cover - compiled
    """Scatter words ``ties[i]``'s high half << 32 | i (i < n) to ``packed``: gene i of group
    ``group_of[i]`` (genes ``starts[v]:starts[v] + sizes[v]`` of the output) goes to fine bucket
    ``_FINE * start + (high half * _FINE * size >> 32)``. The tie keys are uniform, so a bucket
    holds ~1/_FINE genes and the buckets are in key order: each group comes out nearly sorted."""
    n_fine = _FINE * n
    fine[:n_fine] = 0
    for i in range(n):
        v = group_of[i]
        b = _FINE * starts[v] + np.intp(((ties[i] >> np.uint64(32)) * np.uint64(_FINE * sizes[v])) >> np.uint64(32))
        slots[i] = b
        fine[b] += 1
    total = 0
    for b in range(n_fine):
        count = fine[b]
        fine[b] = total
        total += count
    for i in range(n):
        b = slots[i]
        dest = fine[b]
        fine[b] = dest + 1
        packed[dest] = (ties[i] & _HIGH32) | np.uint64(i)


@numba.njit(nogil=True, inline="always")
def _rank_one_pass(m, kept, low, width, keys, toks, cell, gene_keys, hist, sizes, ties, packed, slots, fine,
                   out_tokens, base, token_len):  # pragma: no cover - compiled
    """Random tie-break of a row whose value keys vary over ``width`` <= 11 bits from bit ``low``
    (0: all equal): each counting bucket is one value, so a count of the values gives each
    group's place (``hist``, ``sizes``) and one bucket pass orders value and tie key at once,
    instead of the value scatter. Then each group that reaches into the kept genes is sorted
    (``_sort_packed``; the group at the cut only up to the end of the fine bucket at the cut: the
    buckets are in key order) and the kept tokens written. Returns their bytes."""
    mask = np.uint32((1 << width) - 1)
    buckets = 1 << width
    hist[:buckets] = 0
    for i in range(m):
        v = (keys[i] >> low) & mask
        keys[i] = v
        hist[v] += 1
    total = 0
    for v in range(buckets):
        count = hist[v]
        hist[v] = total
        sizes[v] = count
        total += count
    _hash_ties(m, toks, 0, cell, gene_keys, ties)
    _bucket_pass(m, keys, hist, sizes, ties, packed, slots, fine)
    for v in range(buckets):
        start = hist[v]
        if start >= kept:
            break
        end = start + sizes[v]
        if end > kept:  # the group at the cut: only up to the end of the fine bucket at the cut
            end = fine[slots[np.intp(packed[kept - 1] & _LOW32)]]
        if end - start > 1:
            _sort_packed(start, end, packed, ties)
    size = 0
    for i in range(kept):
        t = toks[np.intp(packed[i] & _LOW32)]
        out_tokens[base + i] = t
        size += token_len[t]
    return size


@numba.njit(nogil=True, inline="always")
def _emit_tie_groups(m, kept, keys, toks, cell, gene_keys, hist, sizes, ties, packed, slots, fine,
                     out_tokens, base, token_len):  # pragma: no cover - compiled
    """Random tie-break after a multi-pass value sort (``keys``/``toks`` sorted, equal values in
    var order): each run of equal keys that reaches into the kept genes is put in tie-key order
    (a bucket pass for a large one), and the kept tokens written. Returns their bytes."""
    hist[0] = 0
    size = 0
    s = 0
    while s < kept:
        k = keys[s]
        e = s + 1
        while e < m and keys[e] == k:
            e += 1
        g = e - s
        if g == 1:
            t = toks[s]
            out_tokens[base + s] = t
            size += token_len[t]
        else:
            _hash_ties(g, toks, s, cell, gene_keys, ties)
            if g > _SMALL_GROUP:
                sizes[0] = g
                slots[:g] = 0
                _bucket_pass(g, slots, hist, sizes, ties, packed, slots, fine)
            else:
                for i in range(g):
                    packed[i] = (ties[i] & _HIGH32) | np.uint64(i)
            _sort_packed(0, g, packed, ties)
            for i in range(min(e, kept) - s):
                t = toks[s + np.intp(packed[i] & _LOW32)]
                out_tokens[base + s + i] = t
                size += token_len[t]
        s = e
    return size


@_compiled
def _rank_rows(indptr, indices, keys, max_key, token_index, token_len, top_genes, row_lo, row_hi, out_tokens, n_genes, n_bytes):  # pragma: no cover - compiled
    """Rows [row_lo, row_hi): kept tokens in order to ``out_tokens[indptr[r]:]``, counts, bytes.

    ``out_tokens`` may be ``indices`` itself: a row is read whole before it is written.

    Never reads or writes out of bounds, whatever ``indices`` holds (``indptr`` is checked by
    ``build``): returns the first row with a column outside ``[0, len(token_index))`` (its
    rows before are done, the rest not), else -1. A row that stores a column twice (valid CSR,
    meaning the sum) is not written: ``n_genes[r] = -1``, for ``build`` to rank its sums."""
    n_cols = token_index.shape[0]
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
        duplicate = False
        previous = -1
        for p in range(lo, hi):
            c = np.int64(indices[p])
            if c < 0 or c >= n_cols:  # never index token_index out of bounds (numba does not check)
                return r
            if c == previous:  # a column stored twice in a sorted row
                duplicate = True
            previous = c
            b = keys[p]
            if b == 0 or b > max_key:
                continue
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
                if i > 0 and cols[order[i]] == cols[order[i - 1]]:
                    duplicate = True
            key_a, key_b = key_b, key_a
            tok_a, tok_b = tok_b, tok_a
        if duplicate:  # left unwritten (its entries intact) for ``build`` to sum and rank
            n_genes[r] = -1
            n_bytes[r] = 0
            continue
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
    return -1


@_compiled
def _rank_rows_random(indptr, indices, keys, max_key, token_index, token_len, top_genes, row_lo, row_hi, out_tokens, n_genes, n_bytes,
                      cell_keys, gene_keys):  # pragma: no cover - compiled
    """``_rank_rows`` with the random tie-break: genes of equal value ordered by tie key,
    splitmix64(``cell_keys[r]`` ^ ``gene_keys[token]``), then var position. The same gather;
    a row whose values take one counting pass (integer counts) is ordered by value and tie key in
    one bucket pass (``_rank_one_pass``), others by value (the same LSD radix sort) and then
    each tie group (``_emit_tie_groups``). A kernel of its own, so ``_rank_rows`` stays as fast."""
    n_cols = token_index.shape[0]
    longest = 0
    for r in range(row_lo, row_hi):
        longest = max(longest, indptr[r + 1] - indptr[r])
    key_a = np.empty(longest, np.uint32)
    key_b = np.empty(longest, np.uint32)
    tok_a = np.empty(longest, np.int32)
    tok_b = np.empty(longest, np.int32)
    cols = np.empty(longest, np.int64)
    hist = np.empty(1 << _MAX_DIGIT_BITS, np.int32)
    sizes = np.empty(1 << _MAX_DIGIT_BITS, np.int32)
    ties = np.empty(longest, np.uint64)
    packed = np.empty(longest, np.uint64)
    fine = np.empty(_FINE * longest, np.int32)
    slots = np.empty(longest, np.int32)
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
        duplicate = False
        previous = -1
        for p in range(lo, hi):
            c = np.int64(indices[p])
            if c < 0 or c >= n_cols:  # never index token_index out of bounds (numba does not check)
                return r
            if c == previous:  # a column stored twice in a sorted row
                duplicate = True
            previous = c
            b = keys[p]
            if b == 0 or b > max_key:
                continue
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
                if i > 0 and cols[order[i]] == cols[order[i - 1]]:
                    duplicate = True
            key_a, key_b = key_b, key_a
            tok_a, tok_b = tok_b, tok_a
        if duplicate:  # left unwritten (its entries intact) for ``build`` to sum and rank
            n_genes[r] = -1
            n_bytes[r] = 0
            continue
        kept = m if top_genes <= 0 else min(m, top_genes)
        size = 0
        varying = any_bits ^ all_bits
        if m > 1 and varying == 0:  # all values equal: one group
            size = _rank_one_pass(m, kept, 0, 0, key_a, tok_a, cell_keys[r], gene_keys, hist, sizes, ties, packed, slots, fine,
                                  out_tokens, lo, token_len)
        elif m > 1:
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
            if high - low < digit:  # one pass: values and tie keys at once
                size = _rank_one_pass(m, kept, low, high - low + 1, key_a, tok_a, cell_keys[r], gene_keys, hist, sizes,
                                      ties, packed, slots, fine, out_tokens, lo, token_len)
            else:  # by value over the varying bits (as in _rank_rows), then the tie groups
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
                size = _emit_tie_groups(m, kept, key_a, tok_a, cell_keys[r], gene_keys, hist, sizes, ties, packed, slots, fine,
                                        out_tokens, lo, token_len)
        elif m == 1:
            t = tok_a[0]
            out_tokens[lo] = t
            size = token_len[t]
        n_genes[r] = kept
        n_bytes[r] = size + kept - 1 if kept > 0 else 0
    return -1


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
        self,
        token_index: np.ndarray,
        vocabulary: pa.Array,
        top_genes: int,
        threads: int = 1,
        buffers: int = 2,
        tie_break: str = DEFAULT_TIE_BREAK,
    ) -> None:
        """``buffers``: sentence buffers kept for reuse once their chunk is dropped (each holds a
        chunk's worth of memory while idle); a chunk built while all of them are still in use gets
        a fresh buffer, returned to the OS when dropped. ``tie_break``: order within a group of
        equal values, ``"random"`` (by tie key: ``build`` then needs the rows' ``cell_keys``) or
        ``"position"`` (by var position)."""
        if tie_break not in TIE_BREAKS:
            raise ValueError(f"tie_break must be one of {', '.join(TIE_BREAKS)}, not {tie_break!r}")
        self.token_index = np.ascontiguousarray(token_index, dtype=np.int32)
        if self.token_index.size and int(self.token_index.max()) >= len(vocabulary):
            raise ValueError(f"token_index holds token {int(self.token_index.max())}, past the {len(vocabulary)} of the vocabulary")
        self.vocabulary = vocabulary
        self.top_genes = int(top_genes)
        self.threads = max(1, int(threads))
        self.tie_break = tie_break
        self.gene_keys = gene_tie_keys(vocabulary) if tie_break == "random" else np.empty(0, np.uint64)
        """Tie key of each vocabulary token (``"random"`` only)."""
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

    def build_csr(self, matrix: sp.csr_matrix, cell_keys: np.ndarray | None = None) -> tuple[pa.Array, np.ndarray]:
        return self.build(matrix.indptr, matrix.indices, matrix.data, cell_keys=cell_keys)

    def build(
        self,
        indptr: np.ndarray,
        indices: np.ndarray,
        data: np.ndarray,
        overwrite_indices: bool = False,
        cell_keys: np.ndarray | None = None,
    ) -> tuple[pa.Array, np.ndarray]:
        """Sentences (Arrow ``string``) and gene counts (int32) of CSR rows.

        ``indptr`` may start at any offset into ``indices``/``data`` (a row slice of a larger
        matrix); only ``indptr[0]:indptr[-1]`` is read. With ``overwrite_indices`` the ranked
        tokens are kept in ``indices`` itself (each row only overwrites its own entries, after
        reading them) instead of a scratch array: a chunk's worth of memory less.
        ``cell_keys``: one uint64 per row (``cell_tie_keys``), required with ``tie_break="random"``,
        ignored with ``"position"``.

        Malformed CSR (what scipy's ``check_format(full_check=True)`` rejects: ``indptr``
        decreasing or past the end of ``indices``/``data``, a column index outside
        ``[0, len(token_index))``) raises ValueError naming the first such row; nothing is read
        out of bounds (with ``overwrite_indices`` the indices of earlier rows may be overwritten by
        then). A column stored twice in a row is one gene with the sum of its values."""
        n_rows = len(indptr) - 1
        if n_rows < 0:
            raise ValueError("indptr is empty: a CSR indptr has one entry more than rows")
        if self.tie_break == "random":
            if cell_keys is None:
                raise ValueError('tie_break="random" needs the cell_keys of the rows (cell_tie_keys)')
            cell_keys = np.ascontiguousarray(cell_keys, dtype=np.uint64)
            if len(cell_keys) != n_rows:
                raise ValueError(f"{len(cell_keys)} cell_keys for {n_rows} rows")
        else:
            cell_keys = None
        n_cols = len(self.token_index)
        indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        _check_indptr(indptr, len(indices), len(data))
        end = int(indptr[-1])
        data, indices = data[:end], indices[:end]  # buffers may be longer than this chunk's entries
        if indices.dtype.kind not in "iu":
            raise ValueError(f"indices must be integers, not {indices.dtype}")
        if not data.dtype.isnative or not indices.dtype.isnative:  # the compiled loops need native order
            data = data.astype(data.dtype.newbyteorder("="))
            indices = indices.astype(indices.dtype.newbyteorder("="))
        keys = _value_keys(data) if self._fast_vocabulary else None
        if keys is None or n_rows == 0:
            _check_indices(indptr, indices, n_cols)
            matrix = _as_csr(indptr, indices, data, n_rows, n_cols)
            return _build_sentences_numpy(matrix, self.token_index, self.vocabulary, self.top_genes, cell_keys, self.gene_keys)
        value_keys, max_key = keys
        nnz = end
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
        kernel, ties = (_rank_rows_random, (cell_keys, self.gene_keys)) if cell_keys is not None else (_rank_rows, ())
        bad_rows = self._run(kernel, [
            (indptr, indices, value_keys, max_key, self.token_index, self.token_len, self.top_genes, lo, hi,
             ranked, n_genes, n_bytes, *ties)
            for lo, hi in ranges
        ])
        if max(bad_rows) >= 0:  # the kernels stopped at an index out of range: say which
            _check_indices(indptr, indices, n_cols)
            raise ValueError(f"row {min(r for r in bad_rows if r >= 0)}: index out of range [0, {n_cols})")  # pragma: no cover
        summed = np.flatnonzero(n_genes < 0)
        if summed.size:  # rows that store a column twice: rank the sums, as scipy reads them
            self._rank_summed_rows(summed, indptr, indices, data, cell_keys, ranked, n_genes, n_bytes)
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

    def _rank_summed_rows(self, rows: np.ndarray, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                          cell_keys: np.ndarray | None, ranked: np.ndarray, n_genes: np.ndarray, n_bytes: np.ndarray) -> None:
        """Rows that store a column more than once (valid CSR: the column's value is the sum, as
        scipy and anndata read it): their entries (left intact by the kernels) summed with
        scipy's ``sum_duplicates`` and ranked by the exact numpy path (which orders ties as the
        kernels do); their tokens go where the kernels would have put them (a row of sums is no
        longer than the row)."""
        starts, stops = indptr[rows], indptr[rows + 1]
        lengths = stops - starts
        sub_indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=sub_indptr[1:])
        take = np.repeat(starts - sub_indptr[:-1], lengths) + np.arange(int(sub_indptr[-1]), dtype=np.int64)
        matrix = _as_csr(sub_indptr, indices[take], data[take], len(rows), len(self.token_index))
        tokens, counts = _rank_tokens_numpy(
            matrix, self.token_index, self.top_genes, None if cell_keys is None else cell_keys[rows], self.gene_keys
        )
        first = np.cumsum(counts) - counts
        at = np.repeat(starts - first, counts) + np.arange(len(tokens), dtype=np.int64)
        ranked[at] = tokens
        n_genes[rows] = counts
        words = np.bincount(np.repeat(np.arange(len(rows)), counts), weights=self.token_len[tokens], minlength=len(rows))
        n_bytes[rows] = np.where(counts > 0, words.astype(np.int64) + counts - 1, 0)

    def _row_ranges(self, indptr: np.ndarray, n_rows: int) -> list[tuple[int, int]]:
        nnz = int(indptr[-1] - indptr[0])
        parts = self.threads if nnz >= _PARALLEL_MIN_NNZ else 1
        if parts == 1:
            return [(0, n_rows)]
        cuts = np.searchsorted(indptr, indptr[0] + np.arange(1, parts) * (nnz / parts)).clip(0, n_rows)
        bounds = [0, *sorted(int(c) for c in cuts), n_rows]
        return [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]

    def _run(self, function, calls: list[tuple]) -> list:
        """``function`` on each argument tuple (on the pool when more than one); their results."""
        if len(calls) == 1:
            return [function(*calls[0])]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="sentences")
        return [future.result() for future in [self._pool.submit(function, *args) for args in calls]]


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


def load_compiled(indices_dtype: np.dtype | type = np.int32, tie_break: str = DEFAULT_TIE_BREAK) -> threading.Thread:
    """Load (from numba's cache, ~0.7 s) the compiled loops ``build`` will call on CSR indices of
    ``indices_dtype`` with ``tie_break``, on a background thread, so the loading overlaps the
    caller's own start (opening the file, reading var and the first chunk) instead of delaying the
    first chunk. Calling the loops early changes nothing else: ``build`` simply finds them loaded
    (or waits for numba's compiler lock). Returns the started thread."""
    thread = threading.Thread(target=_call_compiled, args=(np.dtype(indices_dtype), tie_break), name="load-compiled", daemon=True)
    thread.start()
    return thread


def load_all_compiled() -> None:
    """Load every compiled loop ``build`` may call, here and now (no thread: a process about to
    fork must have none running)."""
    for indices_dtype in (np.int32, np.int64):
        for tie_break in TIE_BREAKS:
            _call_compiled(np.dtype(indices_dtype), tie_break)


def _call_compiled(indices_dtype: np.dtype, tie_break: str = DEFAULT_TIE_BREAK) -> None:
    """The ranking loop of ``tie_break`` and the string loop on a one-row, one-gene CSR with the
    argument types ``build`` passes."""
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
        if tie_break == "random":
            one_key = np.zeros(1, dtype=np.uint64)
            _rank_rows_random(indptr, indices, keys, _FLOAT_MAX_KEY, token_index, token_len, 0, 0, 1, indices, n_genes, n_bytes,
                              one_key, one_key)
        else:
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
    data = data[lo:hi]
    if data.dtype == np.float16:  # scipy.sparse has no float16; float32 holds every float16 exactly
        data = data.astype(np.float32)
    return sp.csr_matrix((data, indices[lo:hi], indptr - lo), shape=(n_rows, n_cols))


def _check_indptr(indptr: np.ndarray, n_indices: int, n_data: int) -> None:
    """ValueError unless ``indptr`` (int64, may start past 0: a row slice) is non-decreasing,
    starts at >= 0 and ends within ``indices`` and ``data``: the kernels then read only inside
    them. O(rows)."""
    if indptr[0] < 0:
        raise ValueError(f"row 0: indptr starts at {int(indptr[0])}, below 0")
    steps = np.diff(indptr)
    if steps.size and steps.min() < 0:
        r = int(np.flatnonzero(steps < 0)[0])
        raise ValueError(f"row {r}: indptr decreases ({int(indptr[r])} -> {int(indptr[r + 1])})")
    end = int(indptr[-1])
    if end > min(n_indices, n_data):
        r = max(0, int(np.flatnonzero(indptr > min(n_indices, n_data))[0]) - 1)
        raise ValueError(f"row {r}: indptr {end} is past the end of indices ({n_indices}) or data ({n_data})")


def _check_indices(indptr: np.ndarray, indices: np.ndarray, n_cols: int) -> None:
    """ValueError naming the first row with a column index outside ``[0, n_cols)``."""
    lo, hi = int(indptr[0]), int(indptr[-1])
    if hi <= lo:
        return
    entries = indices[lo:hi]
    bad = (entries < 0) | (entries >= n_cols)
    if bad.any():
        p = int(np.flatnonzero(bad)[0])
        r = int(np.searchsorted(indptr, lo + p, side="right")) - 1
        raise ValueError(f"row {r}: index {int(entries[p])} out of range [0, {n_cols})")


def default_threads() -> int:
    """Threads for ranking: the CPUs this process may use, at most 2 (more gains little)."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        available = os.cpu_count() or 1
    return max(1, min(2, available))


def build_sentences(
    matrix: sp.csr_matrix,
    token_index: np.ndarray,
    vocabulary: pa.Array,
    top_genes: int,
    tie_break: str = DEFAULT_TIE_BREAK,
    cell_keys: np.ndarray | None = None,
) -> tuple[pa.Array, np.ndarray]:
    """Sentences (Arrow strings) and gene counts (int32) for every row of ``matrix``.

    A gene counts when its var row has a token and its value is > 0 (stored zeros excluded).
    Order: value descending, then within equal values by tie key ascending (``"random"``; the
    rows' ``cell_keys`` from ``cell_tie_keys`` are then required) or by var position
    (``"position"``); at most ``top_genes`` (0 = all). A row with no expressed gene gets an
    empty sentence, never a null.
    """
    with SentenceBuilder(token_index, vocabulary, top_genes, tie_break=tie_break) as builder:
        return builder.build_csr(matrix, cell_keys)


def cell_tie_keys(cell_ids: pa.Array | pa.ChunkedArray | list, seed: int, dataset: str) -> np.ndarray:
    """Cell keys (uint64, one per id) of the random tie-break:
    ``blake2b(f"{seed}\\x1f{dataset}\\x1f{cell_id}".encode(), digest_size=8)`` read little-endian;
    a null id counts as the empty string, a non-string id as ``str(id)``."""
    if isinstance(cell_ids, (pa.Array, pa.ChunkedArray)):
        if pa.types.is_string(cell_ids.type) or pa.types.is_large_string(cell_ids.type):
            values = cell_ids.to_pylist()
        else:
            values = [None if v is None else str(v) for v in cell_ids.to_pylist()]
    else:
        values = [None if v is None else str(v) for v in cell_ids]
    base = hashlib.blake2b(f"{seed}\x1f{dataset}\x1f".encode(), digest_size=8)  # UTF-8 of a concatenation = the bytes concatenated
    digests = []
    for value in values:
        digest = base.copy()
        if value:
            digest.update(value.encode())
        digests.append(digest.digest())
    return np.frombuffer(b"".join(digests), dtype="<u8").astype(np.uint64)


def gene_tie_keys(vocabulary: pa.Array | list) -> np.ndarray:
    """Gene keys (uint64, one per token) of the random tie-break: ``blake2b(token UTF-8,
    digest_size=8)`` read little-endian (a null token: the empty string)."""
    values = vocabulary.to_pylist() if isinstance(vocabulary, (pa.Array, pa.ChunkedArray)) else list(vocabulary)
    digests = []
    for value in values:
        raw = b"" if value is None else value if isinstance(value, bytes) else str(value).encode()
        digests.append(hashlib.blake2b(raw, digest_size=8).digest())
    return np.frombuffer(b"".join(digests), dtype="<u8").astype(np.uint64)


def tie_keys(cell_keys: np.ndarray, gene_keys: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer of ``cell_keys ^ gene_keys`` (element-wise, mod 2**64)."""
    z = np.bitwise_xor(cell_keys, gene_keys, dtype=np.uint64) + _MIX_ADD
    z = (z ^ (z >> np.uint64(30))) * _MIX_MUL1
    z = (z ^ (z >> np.uint64(27))) * _MIX_MUL2
    return z ^ (z >> np.uint64(31))


def _build_sentences_numpy(
    matrix: sp.csr_matrix,
    token_index: np.ndarray,
    vocabulary: pa.Array,
    top_genes: int,
    cell_keys: np.ndarray | None = None,
    gene_keys: np.ndarray | None = None,
) -> tuple[pa.Array, np.ndarray]:
    """The vectorised numpy path: one lexsort per chunk. Exact for every dtype; slower. With
    ``cell_keys`` (and the vocabulary's ``gene_keys``), ties go by tie key, then var position.
    A column stored twice in a row counts once, with the sum of its values (as scipy reads it)."""
    n_rows = matrix.shape[0]
    tokens, counts = _rank_tokens_numpy(matrix, token_index, top_genes, cell_keys, gene_keys, vocabulary)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    words = vocabulary.take(pa.array(tokens, type=pa.int32()))
    sentences = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(offsets), words), " ")
    assert len(sentences) == n_rows
    return sentences.cast(pa.string()), counts.astype(np.int32)


def _rank_tokens_numpy(
    matrix: sp.csr_matrix,
    token_index: np.ndarray,
    top_genes: int,
    cell_keys: np.ndarray | None = None,
    gene_keys: np.ndarray | None = None,
    vocabulary: pa.Array | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The kept tokens (int32) of every row of ``matrix``, row after row in sentence order, and
    their number per row (int64): the ranking of ``_build_sentences_numpy``."""
    if not matrix.has_canonical_format:  # duplicates summed (a copy: the caller's arrays stay)
        data = matrix.data.astype(np.float32) if matrix.data.dtype == np.float16 else matrix.data.copy()
        matrix = sp.csr_matrix((data, matrix.indices.copy(), matrix.indptr.copy()), shape=matrix.shape)
        matrix.sum_duplicates()
    n_rows = matrix.shape[0]
    indptr = matrix.indptr.astype(np.int64)
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(indptr))
    cols = matrix.indices.astype(np.int64)
    values = matrix.data
    tokens = token_index[cols]
    keep = (values > 0) & (tokens >= 0)
    rows, cols, values, tokens = rows[keep], cols[keep], values[keep], tokens[keep]
    if cell_keys is None:
        order = np.lexsort((cols, -values.astype(np.float64), rows))
    else:
        if gene_keys is None:
            gene_keys = gene_tie_keys(vocabulary)
        ties = tie_keys(np.asarray(cell_keys, dtype=np.uint64)[rows], gene_keys[tokens])
        order = np.lexsort((cols, ties, -values.astype(np.float64), rows))
    rows, tokens = rows[order], tokens[order]
    counts = np.bincount(rows, minlength=n_rows).astype(np.int64)
    if top_genes > 0:
        starts = np.cumsum(counts) - counts
        rank = np.arange(len(rows), dtype=np.int64) - starts[rows]
        tokens = tokens[rank < top_genes]
        counts = np.minimum(counts, top_genes)
    return tokens.astype(np.int32, copy=False), counts

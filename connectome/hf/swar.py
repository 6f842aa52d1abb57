"""The one-pass statistics of a float matrix, several entries per 64-bit word (SWAR).

A float is zero when its bits other than the sign are (``bits & V == 0``, ``V = 0x7FFF`` for 16-bit
floats). Adding ``V`` to ``bits & V`` carries into the lane's top bit exactly when the lane is nonzero,
and never into the next lane (``2V`` fits the lane), so one add and one AND test 4 bf16 entries at
once; the count of flags in a word is one multiply. A lane is NaN or infinite when its exponent bits
are all set: the same test on ``(bits & E) ^ E``. For 16-bit floats a word is one N:M group of 4;
for fp8 half a word, for fp32 two words. The numbers equal :func:`connectome.hf.kernel.summarize`'s
(``tests/hf/test_kernel.py`` checks them on every dtype and shape).

Examples
--------
>>> import numpy as np
>>> a = np.array([[0, 1, 0, 0, 2, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, -32768]], dtype=np.int16)
>>> s = summarize_words(a, 0x7F80)
>>> s.count, s.rows.tolist(), s.cols.tolist()[:5], s.hist4, s.hist8, s.nonfinite
(2, [True, False], [False, True, False, False, True], [2, 2, 0, 0, 0], [1, 0, 1, 0, 0, 0, 0, 0, 0], 0)
"""

from __future__ import annotations

import numpy as np

from .kernel import Stats, _threads, have_numba, numba

__all__ = ["as_stats", "fits", "rep", "summarize_words"]


def fits(a: np.ndarray, vbits: int) -> bool:
    """Whether ``a`` (2-D, C-contiguous) can be read by words: a float's value bits, whole groups of 8 per row."""
    width = a.dtype.itemsize * 8
    return (
        have_numba()
        and a.ndim == 2
        and a.flags.c_contiguous
        and a.dtype.itemsize in (1, 2, 4)
        and vbits == (1 << (width - 1)) - 1
        and a.shape[1] % 8 == 0
        and a.size > 0
        and a.ctypes.data % 8 == 0
    )


def rep(pattern: int, width: int) -> np.uint64:
    return np.uint64(sum(pattern << (i * width) for i in range(64 // width)))


def summarize_words(a: np.ndarray, ebits: int, threads: int | None = None) -> Stats:
    """:class:`~connectome.hf.kernel.Stats` (no mask) of a float matrix ``a`` viewed as integers, ``fits``,
    counted by ``threads`` threads (default: as many as torch uses)."""
    width = a.dtype.itemsize * 8
    words = a.view(np.uint64)
    v = (1 << (width - 1)) - 1
    n = threads or _threads()
    args = (words, rep(v, width), rep(ebits, width), ebits != 0, width)
    return as_stats(width, *(_words_serial(*args) if n == 1 else _words(*args, n)))


def as_stats(
    width: int, count: int, rows: np.ndarray, colw: np.ndarray, h4: np.ndarray, h8: np.ndarray, bad: int
) -> Stats:
    """:class:`~connectome.hf.kernel.Stats` from the kernels' results (columns as OR-ed lane flags)."""
    lanes = 64 // width
    flags = (
        colw[:, None] >> (np.arange(lanes, dtype=np.uint64) * np.uint64(width) + np.uint64(width - 1))
    ) & np.uint64(1)
    return Stats(int(count), rows, flags.reshape(-1).astype(bool), h4.tolist(), h8.tolist(), int(bad), None)


if numba is not None:

    @numba.njit(inline="always", cache=True)
    def _flags(x, V, H):  # pragma: no cover - compiled
        return ((x & V) + V) & H

    @numba.njit(inline="always", cache=True)
    def _pop(f, width):  # pragma: no cover - compiled; how many lane flags (top bits) are set
        if width == 16:
            return np.int64(((f >> np.uint64(15)) * np.uint64(0x0001000100010001)) >> np.uint64(48))
        if width == 8:
            return np.int64(((f >> np.uint64(7)) * np.uint64(0x0101010101010101)) >> np.uint64(56))
        return np.int64(((f >> np.uint64(31)) & np.uint64(1)) + (f >> np.uint64(63)))

    @numba.njit(nogil=True, cache=True)
    def _span(w, V, E, finite, width, lo, hi, acc, rows, h4, h8):  # pragma: no cover - compiled
        """Rows ``lo:hi``: flags OR-ed into ``acc``, rows and histograms filled; returns (count, bad)."""
        W = w.shape[1]
        H = V + _low(width)  # the top bit of every lane
        lanes = 64 // width
        lo4 = _low4(width)
        cnt = 0
        bad = 0
        for r in range(lo, hi):
            row = w[r]
            n = 0
            if width == 16:  # a word is a group of 4; two words a group of 8
                # histograms in registers: 5 bins of 12 bits and 9 bins of 7 bits, emptied every 63 pairs
                k4 = np.uint64(0)
                k8 = np.uint64(0)
                m = 0
                for c in range(0, W, 2):
                    f0 = _flags(row[c], V, H)
                    f1 = _flags(row[c + 1], V, H)
                    p0 = _pop(f0, 16)
                    p1 = _pop(f1, 16)
                    k4 += (np.uint64(1) << np.uint64(12 * p0)) + (np.uint64(1) << np.uint64(12 * p1))
                    k8 += np.uint64(1) << np.uint64(7 * (p0 + p1))
                    n += p0 + p1
                    acc[c] |= f0
                    acc[c + 1] |= f1
                    m += 1
                    if m == 63:
                        _empty(h4, k4, 5, 12)
                        _empty(h8, k8, 9, 7)
                        k4 = np.uint64(0)
                        k8 = np.uint64(0)
                        m = 0
                _empty(h4, k4, 5, 12)
                _empty(h8, k8, 9, 7)
            elif width == 8:  # a word is a group of 8; its halves groups of 4
                for c in range(W):
                    f = _flags(row[c], V, H)
                    a = _pop(f & lo4, 8)
                    b = _pop(f & ~lo4, 8)
                    h4[a] += 1
                    h4[b] += 1
                    h8[a + b] += 1
                    n += a + b
                    acc[c] |= f
            else:  # two words a group of 4, four a group of 8
                for c in range(0, W, 4):
                    f0 = _flags(row[c], V, H)
                    f1 = _flags(row[c + 1], V, H)
                    f2 = _flags(row[c + 2], V, H)
                    f3 = _flags(row[c + 3], V, H)
                    a = _pop(f0, 32) + _pop(f1, 32)
                    b = _pop(f2, 32) + _pop(f3, 32)
                    h4[a] += 1
                    h4[b] += 1
                    h8[a + b] += 1
                    n += a + b
                    acc[c] |= f0
                    acc[c + 1] |= f1
                    acc[c + 2] |= f2
                    acc[c + 3] |= f3
            if finite:
                for c in range(W):
                    x = (row[c] & E) ^ E  # zero lanes: exponent all ones
                    bad += lanes - _pop(_flags(x, V, H), width)
            rows[r] = n > 0
            cnt += n
        return cnt, bad

    @numba.njit(parallel=True, nogil=True, cache=True)
    def _words(w, V, E, finite, width, threads):  # pragma: no cover - compiled
        R, W = w.shape
        T = max(1, min(threads, R))
        step = (R + T - 1) // T
        cols = np.zeros((T, W), np.uint64)
        rows = np.zeros(R, np.bool_)
        h4 = np.zeros((T, 5), np.int64)
        h8 = np.zeros((T, 9), np.int64)
        cnt = np.zeros(T, np.int64)
        bad = np.zeros(T, np.int64)
        for t in numba.prange(T):
            c, b = _span(w, V, E, finite, width, t * step, min(R, (t + 1) * step), cols[t], rows, h4[t], h8[t])
            cnt[t] = c
            bad[t] = b
        colw = np.zeros(W, np.uint64)
        for t in range(T):
            for c in range(W):
                colw[c] |= cols[t, c]
        return cnt.sum(), rows, colw, h4.sum(axis=0), h8.sum(axis=0), bad.sum()

    @numba.njit(nogil=True, cache=True)
    def _words_serial(w, V, E, finite, width):  # pragma: no cover - compiled; no thread pool woken
        R, W = w.shape
        colw = np.zeros(W, np.uint64)
        rows = np.zeros(R, np.bool_)
        h4 = np.zeros(5, np.int64)
        h8 = np.zeros(9, np.int64)
        c, b = _span(w, V, E, finite, width, 0, R, colw, rows, h4, h8)
        return c, rows, colw, h4, h8, b

    @numba.njit(inline="always", cache=True)
    def _empty(h, k, bins, bits):  # pragma: no cover - compiled; add packed bin counts to ``h``
        for b in range(bins):
            h[b] += np.int64((k >> np.uint64(b * bits)) & np.uint64((1 << bits) - 1))

    @numba.njit(inline="always", cache=True)
    def _low(width):  # pragma: no cover - compiled; the low bit of every lane
        if width == 16:
            return np.uint64(0x0001000100010001)
        if width == 8:
            return np.uint64(0x0101010101010101)
        return np.uint64(0x0000000100000001)

    @numba.njit(inline="always", cache=True)
    def _low4(width):  # pragma: no cover - compiled; the low half of a word's lanes (fp8: a group of 4)
        return np.uint64(0x00000000FFFFFFFF)

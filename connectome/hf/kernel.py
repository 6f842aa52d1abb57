"""Everything the audit needs of a matrix, in one pass over its bits: which entries are nonzero (and how
many), which rows and columns keep any, N:M group counts for M = 4 and 8 along the last axis, and
how many entries are NaN or infinite.

The matrix comes as an integer view of its stored bits (bf16 as int16, fp8 as uint8...): an entry is
nonzero when ``bits & value_bits`` is, and not finite when ``bits & exponent_bits == exponent_bits``.
numba compiles the loop (the ``fast`` extra), split over row blocks on the cores torch may use;
without numba, numpy computes the same numbers in several passes.

Examples
--------
>>> import numpy as np
>>> a = np.array([[0, 1, 0, 0, 2, 0], [0, 0, 0, 0, 0, 0]], dtype=np.int16)
>>> s = summarize(a, 0x7FFF, 0x7F80)
>>> s.count, s.rows.tolist(), s.cols.tolist(), s.hist4, s.nonfinite
(2, [True, False], [False, True, False, False, True, False], [2, 2, 0, 0, 0], 0)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .nm import group_hist

__all__ = ["Stats", "summarize", "have_numba"]


@dataclass
class Stats:
    count: int
    rows: np.ndarray  # (R,) bool
    cols: np.ndarray  # (C,) bool
    hist4: list[int]  # groups of 4 along the last axis keeping 0..4
    hist8: list[int]
    nonfinite: int
    mask: np.ndarray | None  # (R, C) bool, when asked for


def _numpy(a: np.ndarray, vbits: int, ebits: int, finite: bool, keep: bool) -> Stats:
    nz = np.bitwise_and(a, a.dtype.type(vbits)) != 0
    bad = 0
    if finite:
        e = a.dtype.type(ebits)
        bad = int(np.count_nonzero(np.bitwise_and(a, e) == e))
    R, C = nz.shape
    hists = [group_hist(nz, m) for m in (4, 8)]
    return Stats(
        int(np.count_nonzero(nz)),
        np.logical_or.reduce(nz, axis=1) if C else np.zeros(R, bool),
        np.logical_or.reduce(nz, axis=0) if R else np.zeros(C, bool),
        hists[0],
        hists[1],
        bad,
        nz if keep else None,
    )


try:  # compiled once, cached next to this file
    import numba
except ImportError:  # pragma: no cover - the ``fast`` extra is not installed
    numba = None  # type: ignore[assignment]

if numba is not None:

    @numba.njit(inline="always", cache=True)
    def bit(v, vbits):  # pragma: no cover - compiled
        return 1 if (v & vbits) != 0 else 0

    @numba.njit(parallel=True, nogil=True, cache=True)
    def kernel(a, vbits, ebits, finite, keep, out, threads):  # pragma: no cover - compiled
        R, C = a.shape
        T = max(1, min(threads, R))
        step = (R + T - 1) // T
        cols = np.zeros((T, C), np.uint8)
        rows = np.zeros(R, np.bool_)
        h4 = np.zeros((T, 5), np.int64)
        h8 = np.zeros((T, 9), np.int64)
        cnt = np.zeros(T, np.int64)
        bad = np.zeros(T, np.int64)
        full = C - C % 8
        for t in numba.prange(T):
            acc = cols[t]
            for r in range(t * step, min(R, (t + 1) * step)):
                row = a[r]
                n = 0
                for c in range(0, full, 8):  # whole groups of 8: two groups of 4, no branch per entry
                    b0 = bit(row[c], vbits)
                    b1 = bit(row[c + 1], vbits)
                    b2 = bit(row[c + 2], vbits)
                    b3 = bit(row[c + 3], vbits)
                    b4 = bit(row[c + 4], vbits)
                    b5 = bit(row[c + 5], vbits)
                    b6 = bit(row[c + 6], vbits)
                    b7 = bit(row[c + 7], vbits)
                    lo = b0 + b1 + b2 + b3
                    hi = b4 + b5 + b6 + b7
                    h4[t, lo] += 1
                    h4[t, hi] += 1
                    h8[t, lo + hi] += 1
                    n += lo + hi
                    acc[c] |= b0
                    acc[c + 1] |= b1
                    acc[c + 2] |= b2
                    acc[c + 3] |= b3
                    acc[c + 4] |= b4
                    acc[c + 5] |= b5
                    acc[c + 6] |= b6
                    acc[c + 7] |= b7
                g4 = 0
                g8 = 0
                for c in range(full, C):  # the tail: at most 7 entries
                    b = bit(row[c], vbits)
                    acc[c] |= b
                    g4 += b
                    g8 += b
                    n += b
                    if (c & 3) == 3:
                        h4[t, g4] += 1
                        g4 = 0
                if C & 3:
                    h4[t, g4] += 1
                if C & 7:
                    h8[t, g8] += 1
                if finite:
                    for c in range(C):
                        if (row[c] & ebits) == ebits:
                            bad[t] += 1
                if keep:
                    for c in range(C):
                        out[r, c] = (row[c] & vbits) != 0
                rows[r] = n > 0
                cnt[t] += n
        col_any = np.zeros(C, np.bool_)
        for t in range(T):
            for c in range(C):
                col_any[c] |= cols[t, c] != 0
        return cnt.sum(), rows, col_any, h4.sum(axis=0), h8.sum(axis=0), bad.sum()


def have_numba() -> bool:
    """Whether the compiled loop is used (numba installed, not turned off by ``CONNECTOME_NO_NUMBA=1``)."""
    return numba is not None and not os.environ.get("CONNECTOME_NO_NUMBA")


def _threads() -> int:
    import torch

    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]


def summarize(a: np.ndarray, vbits: int, ebits: int = 0, finite: bool = True, keep: bool = False) -> Stats:
    """The :class:`Stats` of a 2-D integer array of stored bits (see the module docs)."""
    if a.ndim != 2:
        a = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
    finite = finite and ebits != 0
    if not have_numba() or a.size == 0:
        return _numpy(a, vbits, ebits, finite, keep)
    out = np.empty(a.shape if keep else (1, 1), np.bool_)
    kind = a.dtype.type
    count, rows, cols, h4, h8, bad = kernel(a, kind(vbits), kind(ebits), finite, keep, out, _threads())
    return Stats(int(count), rows, cols, h4.tolist(), h8.tolist(), int(bad), out if keep else None)

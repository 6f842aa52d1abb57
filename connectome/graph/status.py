"""Which elements of one tensor are alive, stored per channel as a pattern over positions.

A tensor of shape ``(N, C, H, W)`` has ``C`` units (channels); batch and spatial positions are folded
into each unit. Inside a unit, liveness can still vary with position (a channel fed only through a
corner kernel tap is dead along one border), and the walk keeps that so that it stays exact. Most
channels share one of very few position patterns (usually "everywhere"), so a :class:`Status` stores
a small table of distinct non-empty patterns and one pattern index per channel (``-1``: dead
everywhere). Every operation on it costs O(C + P * S) for P patterns over S positions.

Examples
--------
>>> import numpy as np
>>> s = Status.uniform((1, 3, 2, 2), cdim=1, alive=True)
>>> s.channels, s.table.shape, s.idx.tolist()
(3, (1, 4), [0, 0, 0])
>>> s.map_channels(np.array([2, -1])).alive_units().tolist()
[True, False]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from math import prod
from typing import Any

import numpy as np

from .. import memory
from .reduce import distinct_rows
from .spatial import DimMap, apply_taps

__all__ = ["Status", "dedupe_rows", "combine", "union", "any_alive", "slots", "joined", "gathered", "merge"]
_LARGE = 2**24  # bytes: tables beyond this are checked against the memory budget before they are made


def dedupe_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct non-empty rows of a 2-D bool array and, per input row, its index (-1 if empty).

    >>> t, i = dedupe_rows(np.array([[1, 0], [0, 0], [1, 0]], dtype=bool))
    >>> t.tolist(), i.tolist()
    ([[True, False]], [0, -1, 0])
    """
    rows = np.ascontiguousarray(rows, dtype=bool)
    n = rows.shape[0]
    if n == 0:
        return np.zeros((0, rows.shape[1]), bool), np.zeros(0, np.int64)
    if rows.shape[1] == 0:
        return np.zeros((0, 0), bool), np.full(n, -1, np.int64)
    first, inverse = distinct_rows(rows)
    table = rows[first]
    keep = table.any(axis=1)
    remap = np.full(len(table), -1, np.int64)
    remap[keep] = np.arange(int(keep.sum()))
    return table[keep], remap[inverse]


@dataclass(frozen=True, eq=False)
class Status:
    """Alive/dead per element of a tensor, compressed as ``table[idx[channel]]``.

    Attributes
    ----------
    shape : tuple of int
        The tensor's full shape (batch included: it is one more position dimension).
    cdim : int
        The dimension whose entries are units (channels, features).
    table : ndarray of bool, shape (P, S)
        Distinct non-empty patterns over the S positions (all dims but ``cdim``, in order).
    idx : ndarray of int, shape (C,)
        Pattern of each channel, ``-1`` for a channel dead at every position.
    zero : bool
        Forward walk only: dead elements are exactly zero once additive parameters (biases, norm
        shifts) are zero. False after ops such as ``sigmoid`` or ``exp``; a dead factor with ``zero``
        set silences a product, one without it (a constant gate) lets the other factor through.
    """

    shape: tuple[int, ...]
    cdim: int
    table: np.ndarray
    idx: np.ndarray
    zero: bool = True

    def with_zero(self, zero: bool) -> Status:
        return self if zero == self.zero else replace(self, zero=zero)

    # ---- construction -------------------------------------------------------------------------
    @staticmethod
    def uniform(shape: Sequence[int], cdim: int, alive: bool) -> Status:
        """Every element alive (or every element dead)."""
        shape = tuple(int(d) for d in shape)
        cdim = _norm_dim(cdim, len(shape))
        c, s = _split(shape, cdim)
        if s + 8 * c > _LARGE:
            memory.reserve(s + 8 * c, "the liveness table of a tensor of shape " + "x".join(map(str, shape)))
        if alive and c and s:
            return Status(shape, cdim, np.ones((1, s), bool), np.zeros(c, np.int64))
        return Status(shape, cdim, np.zeros((0, s), bool), np.full(c, -1, np.int64))

    @staticmethod
    def from_rows(rows: np.ndarray, shape: Sequence[int], cdim: int) -> Status:
        """From a ``(C, S)`` bool array of per-channel position patterns."""
        table, idx = dedupe_rows(rows)
        return Status(tuple(shape), _norm_dim(cdim, len(shape)), table, idx)

    @staticmethod
    def from_table(table: np.ndarray, idx: np.ndarray, shape: Sequence[int], cdim: int) -> Status:
        """From a table that may hold duplicate or empty rows; normalises it."""
        if len(table) == 1:
            alive = bool(table.any())
            idx = np.asarray(idx, np.int64) if alive else np.full(len(idx), -1, np.int64)
            return Status(tuple(shape), _norm_dim(cdim, len(shape)), table if alive else table[:0], idx)
        t, remap = dedupe_rows(table)
        idx = np.asarray(idx, np.int64)
        new = np.where(idx >= 0, remap[np.maximum(idx, 0)] if len(remap) else -1, -1)
        return Status(tuple(shape), _norm_dim(cdim, len(shape)), t, new)

    @staticmethod
    def from_unique_table(table: np.ndarray, idx: np.ndarray, shape: Sequence[int], cdim: int) -> Status:
        """From a table whose rows are already distinct and non-empty (as :func:`dedupe_rows` leaves them)."""
        return Status(tuple(shape), _norm_dim(cdim, len(shape)), table, np.asarray(idx, np.int64))

    @staticmethod
    def from_full(arr: np.ndarray, cdim: int) -> Status:
        """From a bool array of the tensor's full shape."""
        arr = np.asarray(arr, bool)
        if arr.ndim == 0:
            return Status.from_rows(arr.reshape(1, 1), (), 0)
        cdim = _norm_dim(cdim, arr.ndim)
        rows = np.moveaxis(arr, cdim, 0).reshape(arr.shape[cdim], prod(arr.shape[:cdim] + arr.shape[cdim + 1 :]))
        return Status.from_rows(rows, arr.shape, cdim)

    # ---- views ----------------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        return len(self.idx)

    @property
    def pos_shape(self) -> tuple[int, ...]:
        """Shape of the position dims (every dim but ``cdim``)."""
        if not self.shape:
            return ()
        return self.shape[: self.cdim] + self.shape[self.cdim + 1 :]

    def alive_units(self) -> np.ndarray:
        """Per channel: alive at some position."""
        return self.idx >= 0

    def any(self) -> bool:
        return self._any

    @cached_property
    def _any(self) -> bool:  # asked many times per status in a walk; statuses are never changed in place
        return bool((self.idx >= 0).any())

    def is_full(self) -> bool:
        """Every element alive."""
        return bool((self.idx >= 0).all()) and len(self.table) == 1 and bool(self.table[0].all())

    def rows(self) -> np.ndarray:
        """The ``(C, S)`` bool matrix of per-channel patterns."""
        t = np.concatenate([self.table, np.zeros((1, self.table.shape[1]), bool)])
        return t[self.idx]

    def full(self) -> np.ndarray:
        """The uncompressed bool array, of the tensor's shape."""
        if not self.shape:
            return self.rows().reshape(())
        r = self.rows().reshape((self.channels,) + self.pos_shape)
        return np.moveaxis(r, 0, self.cdim)

    # ---- transformations --------------------------------------------------------------------------
    def with_cdim(self, cdim: int) -> Status:
        """The same status laid out with another channel dimension."""
        cdim = _norm_dim(cdim, len(self.shape))
        if cdim == self.cdim or not self.shape:
            return self
        if self.is_full() or not self.any():
            return Status.uniform(self.shape, cdim, self.any()).with_zero(self.zero)
        return Status.from_full(self.full(), cdim).with_zero(self.zero)

    def map_channels(self, index: np.ndarray, shape: Sequence[int] | None = None) -> Status:
        """Channel ``k`` of the result is channel ``index[k]`` of this one (``-1``: dead)."""
        index = np.asarray(index, np.int64)
        shape = list(self.shape if shape is None else shape)
        if shape:
            shape[self.cdim] = len(index)
        src = np.concatenate([self.idx, [-1]])
        return Status(tuple(shape), self.cdim, self.table, src[index], self.zero)

    def map_positions(
        self, taps: Sequence[Sequence[DimMap | None]], out_pos: Sequence[int], transpose: bool = False
    ) -> Status:
        """Channel-wise position maps (pooling, resampling): OR over ``taps`` of per-dim maps.

        With ``transpose`` the maps are used the other way round (for the backward walk).
        """
        table = apply_taps(self.table, self.pos_shape, taps, transpose)
        shape = list(out_pos)
        shape.insert(self.cdim, self.channels)
        return Status.from_table(table, self.idx, shape, self.cdim).with_zero(self.zero)

    def broadcast_to(self, shape: Sequence[int]) -> Status:
        """Numpy broadcasting of the status to ``shape``."""
        shape = tuple(shape)
        if shape == self.shape:
            return self
        pad = len(shape) - len(self.shape)
        if not self.shape:
            scalar = Status.from_full(np.broadcast_to(self.full(), shape), _default_cdim(len(shape), 1))
            return scalar.with_zero(self.zero)
        cdim = self.cdim + pad
        src_pos = (1,) * pad + self.pos_shape
        out_pos = shape[:cdim] + shape[cdim + 1 :]
        t = self.table.reshape((len(self.table),) + src_pos)
        t = np.broadcast_to(t, (len(self.table),) + out_pos).reshape(len(self.table), prod(out_pos))
        idx = self.idx
        if len(idx) != shape[cdim]:
            idx = np.broadcast_to(idx, (shape[cdim],))
        return Status(shape, cdim, np.ascontiguousarray(t), np.array(idx), self.zero)

    def reduce_to(self, shape: Sequence[int]) -> Status:
        """Inverse of :meth:`broadcast_to` for the backward walk: OR over broadcast dims."""
        shape = tuple(shape)
        if shape == self.shape:
            return self
        full = self.full()
        pad = full.ndim - len(shape)
        full = np.asarray(full.any(axis=tuple(range(pad)))) if pad else full
        axes = tuple(d for d, n in enumerate(shape) if n == 1 and full.shape[d] != 1)
        if axes:
            full = np.asarray(full.any(axis=axes, keepdims=True))
        return Status.from_full(full, _default_cdim(len(shape), self.cdim - pad))


def combine(statuses: Sequence[Status], fn: Callable[..., np.ndarray]) -> Status:
    """Elementwise ``fn`` of statuses of one shape and layout (patterns combined once per distinct tuple).

    >>> a = Status.uniform((1, 2), 1, True); b = Status.uniform((1, 2), 1, False)
    >>> combine([a, b], lambda x, y: x & y).any()
    False
    """
    first = statuses[0]
    if len(statuses) == 1:
        return first
    if all(len(st.table) == 1 and (st.idx == 0).all() for st in statuses):  # one pattern everywhere
        row = fn(*[st.table for st in statuses])
        return Status.from_table(row, np.zeros(first.channels, np.int64), first.shape, first.cdim)
    uniq, inverse = _distinct_tuples([s.idx for s in statuses], [len(s.table) for s in statuses])
    s = first.table.shape[1]
    tables = [np.concatenate([st.table, np.zeros((1, s), bool)]) for st in statuses]
    rows = fn(*[tables[j][uniq[:, j]] for j in range(len(statuses))])
    return Status.from_table(rows, inverse.ravel(), first.shape, first.cdim)


def _distinct_tuples(idxs: list[np.ndarray], sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of ``stack(idxs, axis=1)`` (entries in ``[-1, size)``) and each row's index among
    them, as ``np.unique(..., axis=0)`` gives them, through one integer key per row (~10x faster)."""
    radix = [n + 1 for n in sizes]
    if float(np.prod(np.array(radix, dtype=np.float64))) >= 2.0**62:
        uniq, inverse = np.unique(np.stack(idxs, axis=1), axis=0, return_inverse=True)
        return uniq, inverse.ravel()
    key = np.zeros(len(idxs[0]), np.int64)
    for idx, r in zip(idxs, radix):  # the first status is the most significant digit: sorted as rows
        key = key * r + (idx + 1)
    ukey, inverse = np.unique(key, return_inverse=True)
    uniq = np.empty((len(ukey), len(idxs)), np.int64)
    for j in range(len(idxs) - 1, -1, -1):
        ukey, digit = np.divmod(ukey, radix[j])
        uniq[:, j] = digit - 1
    return uniq, inverse.ravel()


def union(statuses: Sequence[Status]) -> Status:
    """Elementwise OR of statuses of one shape (layouts are aligned to the first one)."""
    first = statuses[0]
    same = [s if s.cdim == first.cdim else s.with_cdim(first.cdim) for s in statuses]
    return combine(same, lambda *xs: np.logical_or.reduce(xs))


def merge(a: Any, b: Any) -> Any:
    """Two alive statuses of one node, ORed: Status, tuples of them (one per output) or None (nothing alive).

    >>> a, b = Status.uniform((2,), 0, True), None
    >>> merge(a, b) is a, merge(None, None)
    (True, None)
    """
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, Status):
        return union([a, b])
    return tuple(merge(x, y) for x, y in zip(a, b))


def joined(v: object) -> Status | None:
    """The OR of the statuses in a value (a Status, or a tuple-valued op's outputs), or None if it has none.

    >>> joined((None, Status.uniform((2,), 0, True))).any()
    True
    """
    found = [s for _, s in slots(v)]
    return union(found) if found else None


def gathered(n: int, parts: Sequence[tuple[int, Status | None]]) -> list[Status | None]:
    """Per input position ``0..n-1``, the OR of the statuses sent to it (None where none was).

    >>> [p is None for p in gathered(3, [(2, Status.uniform((2,), 0, True))])]
    [True, True, False]
    """
    res: list[Status | None] = [None] * n
    for i, part in parts:
        if part is not None:
            prev = res[i]
            res[i] = part if prev is None else union([prev, part])
    return res


def any_alive(v: object) -> bool:
    """Whether a value (a Status, or a tuple of them, or None) has any alive element.

    >>> any_alive((None, Status.uniform((2,), 0, True)))
    True
    """
    if isinstance(v, Status):
        return v.any()
    if isinstance(v, (tuple, list)):
        return any(any_alive(x) for x in v)
    return False


def slots(v: object) -> list[tuple[int, Status]]:
    """The statuses inside a value, with their position in it (a tuple-valued node has several).

    >>> [k for k, _ in slots((None, Status.uniform((2,), 0, True)))]
    [1]
    """
    if isinstance(v, Status):
        return [(0, v)]
    if isinstance(v, tuple):
        return [(k, s) for k, s in enumerate(v) if isinstance(s, Status)]
    return []


def _split(shape: tuple[int, ...], cdim: int) -> tuple[int, int]:
    if not shape:
        return 1, 1
    return shape[cdim], prod(shape[:cdim] + shape[cdim + 1 :])


def _norm_dim(d: int, ndim: int) -> int:
    if ndim == 0:
        return 0
    return d % ndim


def _default_cdim(ndim: int, hint: int) -> int:
    if ndim == 0:
        return 0
    return min(max(hint, 0), ndim - 1)

"""Maps between positions along one dimension: kernel taps, pooling windows, resampling.

A :class:`DimMap` says, for each output index along a dimension, which input indices it reads. Kernel
taps read one index each (or padding), so they are stored as an index array and applied as a gather;
resampling (adaptive pooling, interpolation) reads several and is stored as a bool matrix. An op that
works on several dims takes one map per dim; a kernel is a list of *taps*, each a tuple of maps.

Examples
--------
>>> taps = conv_taps(n_in=3, n_out=3, kernel=3, stride=1, padding=1)
>>> [t.src.tolist() for t in taps]
[[-1, 0, 1], [0, 1, 2], [1, 2, -1]]
>>> import numpy as np
>>> apply_taps(np.array([[True, False, False]]), (3,), [(taps[0],)]).tolist()
[[False, True, False]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, NamedTuple

import numpy as np
import torch

from .reduce import all_distinct, distinct_rows

__all__ = [
    "DimMap",
    "conv_taps",
    "transposed_taps",
    "adaptive_map",
    "interp_map",
    "apply_taps",
    "all_alive_taps",
    "per_tap_all_alive",
    "per_tap_all_alive_cols",
    "Columns",
    "window_taps",
]


@dataclass(frozen=True, eq=False)
class DimMap:
    """Output index ``y`` reads input ``src[y]`` (``-1``: padding), or every ``x`` with ``mat[y, x]``."""

    n_in: int
    n_out: int
    src: np.ndarray | None = None
    mat: np.ndarray | None = None

    def matrix(self) -> np.ndarray:
        if self.mat is not None:
            return self.mat
        src = _given(self.src)
        m = np.zeros((self.n_out, self.n_in), bool)
        ok = src >= 0
        m[np.nonzero(ok)[0], src[ok]] = True
        return m

    @cached_property
    def reads(self) -> np.ndarray:
        """Per output index: reads at least one real input index (the map applied to all-alive)."""
        return (self.src >= 0) if self.src is not None else np.asarray(_given(self.mat).any(1))

    @cached_property
    def is_read(self) -> np.ndarray:
        """Per input index: read by at least one output index (the transpose applied to all-alive)."""
        if self.src is not None:
            return np.bincount(self.src[self.src >= 0], minlength=self.n_in)[: self.n_in] > 0
        return np.asarray(_given(self.mat).any(0))

    def reads_input(self) -> bool:
        """Whether any output index reads a real (non-padding) input index."""
        return bool((self.src >= 0).any()) if self.src is not None else bool(_given(self.mat).any())

    @cached_property
    def injective(self) -> bool:
        if self.src is None:
            return False
        return all_distinct(self.src[self.src >= 0])

    def apply(self, t: np.ndarray, axis: int) -> np.ndarray:
        """Forward: output positions alive where they read an alive input position."""
        if self.src is not None:
            padded = np.concatenate([t, np.zeros_like(np.take(t, [0], axis=axis))], axis=axis)
            return np.take(padded, np.where(self.src >= 0, self.src, self.n_in), axis=axis)
        return _matmul_axis(_given(self.mat), t, axis)

    def apply_t(self, t: np.ndarray, axis: int) -> np.ndarray:
        """Backward: input positions alive where some alive output position reads them."""
        if self.src is not None and self.injective:
            shape = list(t.shape)
            shape[axis] = self.n_in
            out = np.zeros(shape, bool)
            ok = np.nonzero(self.src >= 0)[0]
            idx_out: list[slice | np.ndarray] = [slice(None)] * t.ndim
            idx_in: list[slice | np.ndarray] = [slice(None)] * t.ndim
            idx_out[axis], idx_in[axis] = self.src[ok], ok
            out[tuple(idx_out)] = t[tuple(idx_in)]
            return out
        return _matmul_axis(self.matrix().T, t, axis)


def _given(a: np.ndarray | None) -> np.ndarray:
    """The one of a :class:`DimMap`'s ``src`` and ``mat`` that it holds."""
    if a is None:
        raise ValueError("a DimMap holds an index array (src) or a bool matrix (mat): it has neither")
    return a


def _matmul_axis(m: np.ndarray, t: np.ndarray, axis: int) -> np.ndarray:
    # torch, not numpy: numpy's BLAS threads spin after each call and starve torch's reductions
    r = torch.tensordot(
        torch.from_numpy(m.astype(np.float32)), torch.from_numpy(t.astype(np.float32)), dims=([1], [axis])
    )
    return np.moveaxis(r.numpy(), 0, axis) > 0


def apply_taps(
    table: np.ndarray, pos_shape: Sequence[int], taps: Sequence[Sequence[DimMap | None]], transpose: bool = False
) -> np.ndarray:
    """OR over taps of the per-dim maps applied to a ``(P, S)`` table; returns ``(P, S_out)``.

    Each tap has one entry per position dim: a :class:`DimMap`, or None for the identity.
    """
    if len(table) == 1 and table.all():
        return all_alive_taps(tuple(tuple(t) for t in taps), tuple(pos_shape), transpose)
    t0 = table.reshape((len(table),) + tuple(pos_shape))
    out = None
    for tap in taps:
        t = t0
        for d, m in enumerate(tap):
            if m is not None:
                t = m.apply_t(t, d + 1) if transpose else m.apply(t, d + 1)
        out = t if out is None else out | t
    if out is None:
        raise ValueError("no taps")
    return out.reshape(len(table), int(np.prod(out.shape[1:], dtype=np.int64)))


@lru_cache(maxsize=4096)
def all_alive_taps(taps: tuple, pos_shape: tuple, transpose: bool) -> np.ndarray:
    """:func:`apply_taps` on one all-alive row, read-only and cached: the common case, and tap maps
    are cached objects, so every layer of the same geometry shares it across analyses."""
    out = np.asarray(per_tap_all_alive(taps, pos_shape, transpose).any(0))
    out.flags.writeable = False
    return out


def _tap_vectors(taps: tuple, d: int, transpose: bool) -> np.ndarray | None:
    """``(T, n_d)``: per tap, the positions of dim ``d`` that its map reads (or, transposed, that are
    read); None where no tap moves dim ``d``. Built once per distinct map (3, not 9, for a 3x3)."""
    maps = [tap[d] for tap in taps]
    if all(m is None for m in maps):
        return None
    slot: dict[int, int] = {}
    rows: list[np.ndarray] = []
    index: list[int] = []
    for m in maps:
        if id(m) not in slot:
            slot[id(m)] = len(rows)
            rows.append(m.is_read if transpose else m.reads)
        index.append(slot[id(m)])
    distinct = np.stack(rows)
    return distinct if len(rows) == len(maps) else distinct[index]


@lru_cache(maxsize=4096)
def per_tap_all_alive(taps: tuple, pos_shape: tuple, transpose: bool) -> np.ndarray:
    """``(T, 1, S)``: each tap applied alone to one all-alive row (read-only, cached).

    A tap applied to all-alive positions is the outer product of one vector per dim, so all taps
    together are one broadcast AND of ``(T, n_d)`` stacks.
    """
    T = len(taps)
    out = np.ones((T,) + (1,) * len(pos_shape), bool)
    full = []
    for d, n in enumerate(pos_shape):  # a map changes a dim's length (stride, transposed conv)
        vecs = _tap_vectors(taps, d, transpose)
        if vecs is None:
            full.append(n)
            continue
        shape = [T] + [1] * len(pos_shape)
        shape[d + 1] = vecs.shape[1]
        full.append(vecs.shape[1])
        out = out & vecs.reshape(shape)
    out = np.broadcast_to(out, (T,) + tuple(full)).reshape(T, 1, -1)
    out.flags.writeable = False
    return out


class Columns(NamedTuple):
    """An all-alive tap table stored by distinct position columns: position ``s`` is column ``cols[s]``."""

    table: np.ndarray  # (T, 1, C)
    cols: np.ndarray  # (S,)
    dims: tuple  # per position dim: (its positions sorted by class, where each class begins)

    def widen(self, rows: np.ndarray) -> np.ndarray:
        """``(K, C)`` per-column values as ``(K, S)`` per-position values."""
        return rows[:, self.cols]

    def narrow(self, rows: np.ndarray) -> np.ndarray:
        """``(K, S)`` bool rows as ``(K, C)``: column c is alive where some position of it is."""
        r = rows.reshape((len(rows),) + tuple(len(order) for order, _ in self.dims))
        for d, (order, starts) in enumerate(self.dims):  # classes are per dim: reduce one dim at a time
            r = np.logical_or.reduceat(np.take(r, order, axis=d + 1), starts, axis=d + 1)
        return r.reshape(len(rows), -1)


@lru_cache(maxsize=4096)
def per_tap_all_alive_cols(taps: tuple, pos_shape: tuple, transpose: bool) -> Columns:
    """:func:`per_tap_all_alive` by its distinct position columns (read-only, cached).

    Positions that every tap treats alike (the interior, away from padding) share a column, so ORs
    over taps run on a few columns instead of every position.

    >>> taps = tuple((t,) for t in conv_taps(6, 6, 3, 1, 1))
    >>> c = per_tap_all_alive_cols(taps, (6,), False)
    >>> c.table.shape, bool((c.widen(c.table[:, 0])[:, None] == per_tap_all_alive(taps, (6,), False)).all())
    ((3, 1, 3), True)
    """
    T = len(taps)
    table = np.ones((T,) + (1,) * len(pos_shape), bool)
    cols: np.ndarray = np.zeros((), np.int64)
    dims = []
    for d, n in enumerate(pos_shape):
        vecs = _tap_vectors(taps, d, transpose)
        if vecs is None:  # every position of dim d alike
            vecs = np.ones((T, n), bool)
        uniq, inv = _distinct_columns(vecs)  # positions of dim d that every tap treats alike
        shape = [T] + [1] * len(pos_shape)
        shape[d + 1] = uniq.shape[1]
        table = table & uniq.reshape(shape)
        cols = cols[..., None] * uniq.shape[1] + inv.reshape(-1)
        order = np.argsort(inv, kind="stable")
        dims.append((order, np.searchsorted(inv[order], np.arange(uniq.shape[1]))))
    table = table.reshape(T, 1, -1)
    cols = cols.reshape(-1)
    table.flags.writeable = cols.flags.writeable = False
    return Columns(table, cols, tuple(dims))


def _distinct_columns(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct columns of a 2-D bool array and, per column, which of them it is."""
    first, inv = distinct_rows(np.ascontiguousarray(m.T))
    return m[:, first], inv


def _padded_index(y: np.ndarray, n: int, mode: str) -> np.ndarray:
    if mode == "zeros":
        return np.where((y >= 0) & (y < n), y, -1)
    if mode == "circular":
        return y % n
    if mode == "replicate":
        return np.clip(y, 0, n - 1)
    if mode == "reflect":
        period = 2 * (n - 1) if n > 1 else 1
        r = np.abs(y) % period if n > 1 else np.zeros_like(y)
        return np.where(r >= n, period - r, r)
    raise ValueError(f"unknown padding mode {mode!r}")


@lru_cache(maxsize=4096)
def conv_taps(
    n_in: int, n_out: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1, mode: str = "zeros"
) -> tuple[DimMap, ...]:
    """One map per kernel tap along a dim: output ``y`` reads ``y*stride - padding + a*dilation``."""
    y = np.arange(n_out) * stride - padding
    return tuple(DimMap(n_in, n_out, src=_padded_index(y + a * dilation, n_in, mode)) for a in range(kernel))


@lru_cache(maxsize=4096)
def transposed_taps(
    n_in: int, n_out: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> tuple[DimMap, ...]:
    """Taps of a transposed convolution: input ``x`` writes output ``x*stride - padding + a*dilation``."""
    taps = []
    y = np.arange(n_out)
    for a in range(kernel):
        num = y + padding - a * dilation
        x = num // stride
        ok = (num % stride == 0) & (x >= 0) & (x < n_in)
        taps.append(DimMap(n_in, n_out, src=np.where(ok, x, -1)))
    return tuple(taps)


def window_taps(n_in: int, n_out: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> tuple[DimMap, ...]:
    """Pooling windows: the same geometry as convolution taps with zero padding."""
    return conv_taps(n_in, n_out, kernel, stride, padding, dilation, "zeros")


@lru_cache(maxsize=1024)
def adaptive_map(n_in: int, n_out: int) -> DimMap:
    """Adaptive pooling: output ``i`` reads ``[floor(i*n_in/n_out), ceil((i+1)*n_in/n_out))``."""
    m = np.zeros((n_out, n_in), bool)
    for i in range(n_out):
        lo = (i * n_in) // n_out
        hi = -((-(i + 1) * n_in) // n_out)
        m[i, lo:hi] = True
    return DimMap(n_in, n_out, mat=m)


@lru_cache(maxsize=1024)
def interp_map(n_in: int, n_out: int, mode: str, align_corners: bool | None, scale: float | None) -> DimMap:
    """The support of torch's 1-D interpolation along one dim, read off torch itself on a basis."""
    one_d = {
        "nearest": "nearest",
        "nearest-exact": "nearest-exact",
        "linear": "linear",
        "bilinear": "linear",
        "trilinear": "linear",
        "bicubic": "linear",
        "area": "area",
    }[mode]
    if mode == "bicubic":  # cubic kernels reach two neighbours each side; widen linear's support
        return _widen(interp_map(n_in, n_out, "bilinear", align_corners, scale), 1)
    eye = torch.eye(n_in, dtype=torch.float64).unsqueeze(1)
    kw: dict[str, Any] = {} if one_d in ("nearest", "nearest-exact", "area") else {"align_corners": align_corners}
    if scale is not None and one_d != "area":
        r = torch.nn.functional.interpolate(eye, scale_factor=scale, mode=one_d, **kw)
        if r.shape[-1] != n_out:
            r = torch.nn.functional.interpolate(eye, size=n_out, mode=one_d, **kw)
    else:
        r = torch.nn.functional.interpolate(eye, size=n_out, mode=one_d, **kw)
    m = (r[:, 0, :].T != 0).numpy()
    return DimMap(n_in, n_out, mat=m)


def _widen(m: DimMap, k: int) -> DimMap:
    mat = m.matrix()
    for _ in range(k):
        wide = mat.copy()
        wide[:, 1:] |= mat[:, :-1]
        wide[:, :-1] |= mat[:, 1:]
        mat = wide
    return DimMap(m.n_in, m.n_out, mat=mat)

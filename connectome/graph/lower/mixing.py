"""Weighted channel mixing: linear layers and (transposed, grouped, depthwise) convolutions.

All of them are one :class:`Mixing` op: a connectivity ``conn[o, j, t]`` (output channel ``o``, input
channel ``j`` of its group, kernel tap ``t``) plus, per tap, the position maps of
:mod:`connectome.graph.spatial`. A linear layer is the case of one tap that maps every position to itself.

The walk never touches the 4-D mask more than a few times per layer: forward it reduces ``conn`` to
``(O, T, P)`` ("does output channel o see input pattern p through tap t"), backward to ``(I, T, Q)``,
and the effective mask is ``conn`` ANDed with a gather from a tiny ``(P, Q, T)`` table.

Examples
--------
>>> import torch
>>> from connectome.graph.status import Status
>>> op = Mixing.linear(None, torch.tensor([[1, 0], [0, 0]], dtype=torch.bool), (1, 2), (1, 2))
>>> op.forward([Status.uniform((1, 2), 1, True)]).alive_units().tolist()
[True, False]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..reduce import any_along
from ..spatial import Columns, DimMap, apply_taps, per_tap_all_alive, per_tap_all_alive_cols
from ..status import Status, dedupe_rows
from .base import Op, Weight

__all__ = ["Mixing"]

Tap = Sequence[DimMap | None]


class Mixing(Op):
    def __init__(
        self,
        weight: Weight | None,
        conn: torch.Tensor,
        groups: int,
        in_shape: tuple,
        out_shape: tuple,
        cdim: int,
        taps: Sequence[Tap] | None,
        to_param: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.weights = [weight] if weight is not None else []
        self.conn = conn.detach().to("cpu")  # (O, Ig, T) bool
        self.groups = groups
        self.in_shape, self.out_shape, self.cdim = tuple(in_shape), tuple(out_shape), cdim
        n_pos = len(in_shape) - 1
        self.taps: list[Tap] = list(taps) if taps is not None else [(None,) * n_pos]
        self._tap_key = tuple(tuple(t) for t in self.taps)  # the key of the cached all-alive tables
        self.to_param = to_param or (lambda m: m.reshape(self.weights[0].mask.shape))
        self._cache: dict = {}
        self._any_in = self._any_out = None
        if groups == 1 and weight is not None:
            # reduce the mask once for both walks; prefetch took some of these while reading it
            oc, ig, T = self.conn.shape
            red = weight.reduced if _views_mask(self.conn, weight.mask) else None
            if red is not None and T == 1 and red.rows is not None:
                self._any_in = red.rows[:, None]  # (O, T): reads some input channel
            else:
                self._any_in = any_along(self._u8(), 1).numpy() > 0
            if red is not None:
                self._any_out = red.cols.reshape(ig, T)  # (Ig, T): read by some output channel
            else:
                self._any_out = self._u8().amax(0).numpy() > 0

    @staticmethod
    def linear(weight: Weight | None, mask: torch.Tensor, in_shape: tuple, out_shape: tuple) -> Mixing:
        """``y[..., o] = sum_i w[o, i] x[..., i]`` with ``mask`` of shape ``(O, I)``."""
        return Mixing(weight, mask.unsqueeze(-1), 1, in_shape, out_shape, len(in_shape) - 1, None)

    # ---- helpers --------------------------------------------------------------------------------
    @property
    def out_channels(self) -> int:
        return self.conn.shape[0]

    def _pin(self, idx: np.ndarray) -> np.ndarray:
        """Pattern index of the input channel behind each (output channel, group slot): (O or 1, Ig)."""
        ig = self.conn.shape[1]
        if self.groups == 1:
            return idx[None, :]
        og = self.out_channels // self.groups
        return np.repeat(idx.reshape(self.groups, ig), og, axis=0)

    def _shifted(self, s: Status, transpose: bool = False) -> np.ndarray:
        """(T, P, S') table after each tap's position maps (cached: forward and effective share it)."""
        if len(s.table) == 1 and s.table.all():
            return per_tap_all_alive(self._tap_key, tuple(s.pos_shape), transpose)
        key = (transpose, s.table.shape, s.table.tobytes())
        hit = self._cache.get(key)
        if hit is None:
            shape = s.pos_shape
            hit = np.stack([apply_taps(s.table, shape, [tap], transpose) for tap in self.taps])
            self._cache[key] = hit
        return hit

    # ---- the walk ---------------------------------------------------------------------------------
    # Reductions run as ``amax`` over a uint8 view: torch's ``any(dim)`` on bool is ~9x slower on CPU.
    def _u8(self) -> torch.Tensor:
        return self.conn.view(torch.uint8)

    def _reach_forward(self, idx: np.ndarray, P: int) -> np.ndarray:
        """(O, T, P): output channel o sees input pattern p through tap t."""
        oc, ig, T = self.conn.shape
        if self._any_in is not None and P == 1 and (idx == 0).all():
            return self._any_in[:, :, None]
        if self.groups == 1:
            return _group_reach(self._u8(), idx, P, dim=1).transpose(1, 2, 0) if P else np.zeros((oc, T, 0), bool)
        pin = torch.from_numpy(self._pin(idx))
        out = np.zeros((oc, T, P), bool)
        for p in range(P):
            out[:, :, p] = any_along(self._u8() * (pin == p).unsqueeze(-1), 1).numpy() > 0
        return out

    def _reach_backward(self, idx: np.ndarray, Q: int) -> np.ndarray:
        """(I, T, Q): input channel i reaches output pattern q through tap t."""
        oc, ig, T = self.conn.shape
        if self._any_out is not None and Q == 1 and (idx == 0).all():
            return self._any_out[:, :, None]
        if self.groups == 1:
            return _group_reach(self._u8(), idx, Q, dim=0).transpose(1, 2, 0)
        og = oc // self.groups
        u8 = self._u8().reshape(self.groups, og, ig, T)
        out = np.zeros((self.groups * ig, T, Q), bool)
        for q in range(Q):
            sel = torch.from_numpy(idx == q).reshape(self.groups, og)
            if bool(sel.any()):
                hit = (u8 * sel.view(self.groups, og, 1, 1)).amax(1)
                out[:, :, q] = hit.reshape(self.groups * ig, T).numpy() > 0
        return out

    def forward(self, ins: list[Status]) -> Status:
        s = ins[0].with_cdim(self.cdim)
        P = len(s.table)
        if P == 0:  # a layer of a nonzero constant is a nonzero constant (zero stays zero)
            return Status.uniform(self.out_shape, self.cdim, False).with_zero(s.zero)
        return self._combine(self._reach_forward(s.idx, P), s, False, self.out_shape).with_zero(s.zero)

    def backward(self, ins: list[Status], out: Status | None, grad: Status) -> list[Status | None]:
        g = grad.with_cdim(self.cdim)
        Q = len(g.table)
        if Q == 0:
            return [None]
        return [self._combine(self._reach_backward(g.idx, Q), g, True, self.in_shape)]

    def _columns(self, s: Status, transpose: bool) -> Columns | None:
        """The all-alive tap table by distinct columns, where it is big: many taps over many positions
        (a stem's 7x7 at 224x224). Small tables are cheaper to build whole than to compress."""
        if len(self.taps) > 1 and len(s.table) == 1 and len(self.taps) * s.table.shape[1] >= 1 << 16 and s.table.all():
            return per_tap_all_alive_cols(self._tap_key, tuple(s.pos_shape), transpose)
        return None

    def _combine(self, reach: np.ndarray, s: Status, transpose: bool, shape: tuple) -> Status:
        c = self._columns(s, transpose)
        if c is not None:
            return _combine_rows(reach, c.table, shape, self.cdim, c)
        return _combine_rows(reach, self._shifted(s, transpose), shape, self.cdim)

    def effective(self, ins: list[Status], grad: Status | None) -> dict[str, torch.Tensor]:
        if not self.weights:
            return {}
        return {self.weights[0].name: self.to_param(self.effective_conn(ins, grad))}

    def effective_conn(self, ins: list[Status], grad: Status | None) -> torch.Tensor:
        """The effective part of ``conn``: ``(O, Ig, T)`` bool (output channel, group slot, tap)."""
        s = ins[0].with_cdim(self.cdim)
        if grad is None or len(s.table) == 0 or len(grad.table) == 0:
            return torch.zeros_like(self.conn)
        g = grad.with_cdim(self.cdim)
        gt = g.table
        c = self._columns(s, False)
        if c is not None:
            sh, gt = c.table, c.narrow(gt)
        else:
            sh = self._shifted(s)  # (T, P, S_out)
        E = (sh[:, :, None, :] & gt[None, None]).any(-1).transpose(1, 2, 0)  # (P, Q, T)
        P, Q, T = E.shape
        pin = self._pin(s.idx)
        if P == 1 and Q == 1:  # the common case: one pattern each side, gates are per channel and per tap
            a_out, e = g.idx >= 0, E[0, 0]
            if a_out.all() and e.all() and (s.idx >= 0).all():
                return self.conn
            if e.all():
                view = _gated_view(self.conn, a_out, pin >= 0)
                if view is not None:
                    return view
            eff = _gated(self.conn, a_out, pin >= 0)
            if not e.all():
                eff &= torch.from_numpy(e)
            return eff
        ext = np.zeros((P + 1, Q + 1, T), bool)
        ext[:P, :Q] = E
        ext_t = torch.from_numpy(ext)
        pin_t = torch.from_numpy(np.where(pin >= 0, pin, P))
        qout = torch.from_numpy(np.where(g.idx >= 0, g.idx, Q)).unsqueeze(1)
        eff = self.conn & ext_t[pin_t, qout]
        return eff


def _gated_view(conn: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor | None:
    """``_gated`` as a broadcast view, when ``conn`` is one (a lazily read matrix's stand-in, one row or
    one column repeated) and the gate clears only along the repeated vector; else None."""
    if conn.dim() != 3 or conn.shape[2] != 1 or cols.shape[0] != 1:
        return None
    st = conn.stride()
    if st[1] == 0 and cols.all():  # every column is the first one
        return torch.from_numpy(conn[:, 0, 0].numpy() & rows)[:, None, None].expand(conn.shape)
    if st[0] == 0 and rows.all():  # every row is the first one
        return torch.from_numpy(conn[0, :, 0].numpy() & cols[0])[None, :, None].expand(conn.shape)
    return None


def _gated(conn: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
    """``conn & rows[:, None, None] & cols[..., None]`` with ``cols`` of shape (O or 1, Ig): a copy with
    the dead rows and columns cleared, several times faster than a broadcast AND (dead ones are few)."""
    # contiguous even when ``conn`` is a broadcast stand-in; torch copies on its threads, which also share
    # the cost of the new pages' first writes
    out = conn.clone(memory_format=torch.contiguous_format)
    eff = out.numpy()
    eff[~rows] = False
    if cols.shape[0] == 1:
        eff[:, ~cols[0]] = False
    else:
        eff &= cols[:, :, None]
    return out


def _views_mask(conn: torch.Tensor, mask: torch.Tensor) -> bool:
    """``conn`` is ``mask`` reshaped to (out, in, taps) without reordering: the mask's reductions over
    its first dim are ``conn``'s."""
    if conn.data_ptr() != mask.data_ptr() or mask.dim() < 1 or conn.shape[0] != mask.shape[0]:
        return False
    if conn.numel() != mask.numel():
        return False
    if conn.is_contiguous() and mask.is_contiguous():
        return True
    # a broadcast stand-in for a matrix (a model folder read lazily), unsqueezed for its one tap
    return mask.dim() == 2 and conn.dim() == 3 and conn.shape[:2] == mask.shape and conn.stride()[:2] == mask.stride()


# runs of equal indices reduced one by one, at most (a call each); beyond, group by group
ROW_RUNS = 512  # along the first dim: blocks of memory
MIDDLE_RUNS = 32  # along a middle dim: strided


def _group_reach(u8: torch.Tensor, idx: np.ndarray, n: int, dim: int) -> np.ndarray:
    """(n, rest...) bool: for each group g of indices along ``dim`` (``idx == g``), any connection.

    Each run of equal indices is reduced on its own slice (a view). Where a middle dim has many runs
    (scattered dead channels), a group is selected by multiplying with a 0/1 vector instead:
    vectorised, unlike ``index_select`` along a middle dim, which is ~7x slower on CPU.
    """
    rest_shape = tuple(d for k, d in enumerate(u8.shape) if k != dim)
    repeated = [k for k in range(u8.dim()) if u8.stride(k) == 0 and u8.shape[k] > 1]
    if repeated:  # a broadcast stand-in (a lazily read matrix): reduce its one stored slice, then spread
        small = u8
        for k in repeated:
            small = small.narrow(k, 0, 1)
        if dim in repeated:  # every index along ``dim`` holds the same slice: a group reaches it if not empty
            hit = (small.squeeze(dim) > 0).numpy()
            reach = np.stack([hit if (idx == g).any() else np.zeros_like(hit) for g in range(n)])
        else:
            reach = _group_reach(small, idx, n, dim)
        return np.ascontiguousarray(np.broadcast_to(reach, (n,) + rest_shape))
    out = np.zeros((n,) + rest_shape, bool)
    if len(idx) == 0:
        return out
    starts = np.concatenate([[0], np.flatnonzero(np.diff(idx)) + 1])
    if len(starts) <= (ROW_RUNS if dim == 0 else MIDDLE_RUNS):
        # one reduction per run of equal indices: each entry read once, no product made. A run of rows
        # is one block of memory; runs along a middle dim are strided, worth it while they are few
        stops = np.concatenate([starts[1:], [len(idx)]])
        for g, a, b in zip(idx[starts].tolist(), starts.tolist(), stops.tolist()):
            if 0 <= g < n:
                whole = a == 0 and b == len(idx)
                part = any_along(u8, dim) if whole else u8.narrow(dim, a, b - a).amax(dim)
                out[g] |= part.numpy() > 0
        return out
    view = [1] * u8.dim()
    view[dim] = -1
    for g in range(n):
        sel = idx == g
        if sel.all():
            out[g] = any_along(u8, dim).numpy() > 0
        elif sel.any():
            out[g] = any_along(u8 * torch.from_numpy(sel.astype(np.uint8)).view(view), dim).numpy() > 0
    return out


def _combine_rows(
    reach: np.ndarray, shifted: np.ndarray, shape: tuple, cdim: int, cols: Columns | None = None
) -> Status:
    """Channel k's pattern = OR over (tap t, pattern p) with ``reach[k, t, p]`` of ``shifted[t, p]``.

    With ``cols``, ``shifted`` holds the distinct position columns of ``cols`` only.
    """
    K, T, P = reach.shape

    def widen(rows: np.ndarray) -> np.ndarray:
        return rows if cols is None else cols.widen(rows)

    if K and reach.all():  # every channel sees every (tap, pattern): one pattern for all
        row = np.logical_or.reduce(shifted.reshape(T * P, -1), axis=0)[None]
        return Status.from_table(widen(row), np.zeros(K, np.int64), shape, cdim)
    if T * P == 1:  # 1x1 kernels on one pattern: a channel is either that pattern or dead
        return Status.from_table(widen(shifted.reshape(1, -1)), np.where(reach[:, 0, 0], 0, -1), shape, cdim)
    flat = reach.reshape(K, T * P)
    full = shifted.reshape(T * P, -1).all(axis=1)
    if full.any():  # a channel that reaches an everywhere-alive (tap, pattern) is alive everywhere
        hit = (flat & full).any(axis=1)
        if hit.any():  # give those channels one row, so that they dedupe into a single all-alive pattern
            flat = flat.copy()
            flat[hit] = np.arange(T * P) == int(np.argmax(full))
    uniq, inverse = dedupe_rows(flat)
    if len(uniq) == 0:
        return Status.uniform(shape, cdim, False)
    flat = shifted.reshape(T * P, -1)
    if len(uniq) * T * P <= 256:  # few distinct rows: plain ORs, no float conversion
        rows = np.stack([np.logical_or.reduce(flat[u]) for u in uniq])
    else:  # torch, not numpy: numpy's BLAS threads spin after each call and starve torch's reductions
        rows = (torch.from_numpy(uniq.astype(np.float32)) @ torch.from_numpy(flat.astype(np.float32))).numpy() > 0
    if cols is None:
        return Status.from_table(rows, inverse, shape, cdim)
    # rows equal on the distinct columns are equal everywhere: dedupe narrow, then widen
    table, remap = dedupe_rows(rows)
    idx = np.where(inverse >= 0, remap[np.maximum(inverse, 0)], -1) if len(remap) else np.full(K, -1, np.int64)
    return Status.from_unique_table(cols.widen(table), idx, shape, cdim)

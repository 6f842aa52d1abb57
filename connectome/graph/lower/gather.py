"""Indexing at places the data decides: ``gather``, ``take_along_dim``, ``x[idx]``, ``index_select``, ``take``
whose indices are computed from the input (a router's ``argsort``, each token's top-k experts). Writes at
such places (``index_put``, ``scatter``, ``index_add``, ``index_copy``) are in :mod:`.put`, on the same maps.

Along the indexed dims any place may be picked, so an output element depends on the whole slice of the
input along those dims at its other coordinates; the other dims stay exact (features of routed tokens).
Which slice each element reads is read off the op itself, as in :mod:`.structural`: it is run once on the
input with the indexed dims reduced to one place, numbered, and with all-zero indices.

Indices carry no values but decide them: an output element changes with its index where the slice it
picks from may be nonzero, so the weights that compute the indices (a router) stay effective. Constant
indices (buffers) keep the exact maps of :mod:`.structural` and :mod:`.scatter`.

Examples
--------
>>> import torch
>>> from connectome import analyze
>>> class Routed(torch.nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.a, self.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)
...     def forward(self, x):                          # (5 tokens, 4 features)
...         order = self.a(x).sum(1).argsort()         # tokens reordered by the data
...         return self.b(torch.relu(self.a(x))[order])
>>> m = Routed()
>>> with torch.no_grad(): m.a.weight[0] = 0
>>> res = analyze(m, input_shape=(5, 4))
>>> res.effective_masks["b.weight"][:, 0].any().item(), res.unsupported_ops
(False, [])
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from math import prod
from typing import Any

import numpy as np
import torch
from torch import fx

from ..status import Status
from .base import Ctx, Op
from .indexmap import run_on

aten = torch.ops.aten

__all__ = ["Pick", "picked"]


def _bits(idx: np.ndarray, flags: np.ndarray, n: int) -> np.ndarray:
    """``out[j] = any(flags[i] for idx[i] == j)``, for ``j < n`` (``idx`` -1: dropped)."""
    ok = (idx >= 0) & flags
    return np.bincount(idx[ok], minlength=n)[:n] > 0 if ok.any() else np.zeros(n, bool)


def _ctrl(idxs: list[Status], pos: list[np.ndarray], n: int) -> np.ndarray:
    """Per read element: some index input that decides it is alive."""
    c = np.zeros(n, bool)
    for s, p in zip(idxs, pos):
        if s is not None and s.any():
            c |= s.full().reshape(-1)[p]
    return c


class Pick(Op):
    """``out[o] = x[r(o) at some place along dims]``, the place decided by index inputs.

    ``src[o]`` is the flat index of ``r(o)`` in ``x`` reduced over ``dims``; ``pos[k][o]`` the element of
    index input ``k`` that decides ``o``. Inputs: ``x``, then the index tensors.
    """

    multi = True
    couples = True

    def __init__(
        self,
        x_shape: tuple,
        dims: tuple,
        src: np.ndarray,
        pos: list[np.ndarray],
        out_shape: tuple,
        idx_shapes: list[tuple],
    ):
        self.x_shape, self.dims, self.src, self.pos = x_shape, dims, src, pos
        self.out_shape, self.idx_shapes = out_shape, idx_shapes
        self.r_shape = tuple(1 if d in dims else n for d, n in enumerate(x_shape))
        self.out_cdim = len(out_shape) - 1 if out_shape else 0

    def _reduced(self, x: Status) -> np.ndarray:
        full = x.full()
        return (full.any(axis=self.dims, keepdims=True) if self.dims else full).reshape(-1)

    def forward(self, ins: list[Status]) -> Status:
        x = ins[0]
        out = self._reduced(x)[self.src]
        if not x.zero:  # a nonzero constant picked by a live index varies with it
            out = out | _ctrl(ins[1:], self.pos, len(self.src))
        return Status.from_full(out.reshape(self.out_shape), self.out_cdim).with_zero(x.zero)

    def backward(self, ins: list[Status], out: Status, grad: Status) -> list[Status | None]:
        x = ins[0]
        g = grad.full().reshape(-1)
        n = prod(self.r_shape)
        gx = _bits(self.src, g, n).reshape(self.r_shape)
        res: list[Status | None] = [Status.from_full(np.broadcast_to(gx, self.x_shape), x.cdim if x.shape else 0)]
        may = g if not x.zero else g & self._reduced(x)[self.src]
        for s, p, shp in zip(ins[1:], self.pos, self.idx_shapes):
            res.append(Status.from_full(_bits(p, may, prod(shp)).reshape(shp), s.cdim if shp else 0))
        return res


# ---- reading the maps off the op ------------------------------------------------------------------------


def _name(ctx: Ctx) -> str:
    t = ctx.node.target
    return (t if isinstance(t, str) else getattr(t, "__name__", str(t))).lstrip(".").split(".")[0]


def _numbered(shape: tuple, along: int | None = None) -> torch.Tensor:
    """Element numbers of ``shape`` (float64), or with ``along``: the coordinate along that dim."""
    if along is None:
        return torch.arange(prod(shape), dtype=torch.float64).reshape(shape)
    view = [1] * len(shape)
    view[along] = shape[along]
    return torch.arange(shape[along], dtype=torch.float64).reshape(view).expand(shape).contiguous()


def _maps(
    read: Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor],
    x_shape: tuple,
    dims: tuple,
    idx: list[tuple[tuple, torch.dtype, int | None]],
) -> tuple[np.ndarray, list[np.ndarray], tuple]:
    """``src`` (per read element: flat index in ``x`` reduced over ``dims``) and ``pos`` (per index tensor:
    which of its elements decides the read element), by running ``read`` on numbered tensors.

    ``idx`` holds each index tensor's shape, dtype and the dim of ``x`` it indexes (None: ``x`` flattened).
    """
    r_shape = tuple(1 if d in dims else n for d, n in enumerate(x_shape))
    zeros = [torch.zeros(s, dtype=dt) for s, dt, _ in idx]
    with torch.no_grad():
        out = read(_numbered(r_shape), zeros)
        src = out.reshape(-1).numpy().astype(np.int64)
        pos = []
        for k, (s, dt, d) in enumerate(idx):
            n = prod(s)
            if d is None:
                x = torch.arange(n, dtype=torch.float64).reshape((n,) + (1,) * (len(x_shape) - 1))
            else:
                x = _numbered(tuple(n if j == d else m for j, m in enumerate(r_shape)), d)
            ids = list(zeros)
            ids[k] = torch.arange(n, dtype=dt).reshape(s)
            pos.append(read(x, ids).reshape(-1).numpy().astype(np.int64))
    return src, pos, tuple(out.shape)


def _is_index(ctx: Ctx, a: Any) -> bool:
    v = ctx.val(a)
    return (
        isinstance(a, fx.Node)
        and isinstance(v, torch.Tensor)
        and not v.is_floating_point()
        and v.dtype != torch.bool
        and not v.is_complex()
    )


def _key_dims(ctx: Ctx, x_ndim: int, key: Any) -> list[tuple[Any, int]] | None:
    """(index node, dim of x) for ``x[key]``; None where the key holds a bool mask or a nested list."""
    key = key if isinstance(key, tuple) else (key,)
    consuming = sum(1 for k in key if k is not None and k is not Ellipsis)
    found, d = [], 0
    for k in key:
        if k is Ellipsis:
            d += x_ndim - consuming
        elif k is None:
            continue
        elif isinstance(k, fx.Node) and isinstance(ctx.val(k), torch.Tensor):
            if not _is_index(ctx, k):
                return None
            found.append((k, d))
            d += 1
        elif isinstance(k, (list, tuple)):
            return None
        else:
            d += 1
    return found


def picked(ctx: Ctx) -> Op | None:
    """A :class:`Pick` for an indexing node whose indices depend on the input; None where it cannot tell."""
    try:
        return _picked(ctx)
    except Exception:  # a form this does not read: the caller's exact map, or its fallback
        return None


def _picked(ctx: Ctx) -> Op | None:
    name = _name(ctx)
    node = ctx.node
    x = node.args[0]
    if not isinstance(x, fx.Node) or not isinstance(ctx.val(x), torch.Tensor):
        return None
    ndim = ctx.val(x).dim()
    pairs: list[tuple[Any, Any]] | None
    if name in ("gather", "index_select"):
        pairs = [(ctx.arg(2, "index"), int(ctx.concrete(ctx.arg(1, "dim"))) % max(ndim, 1))]
    elif name == "take_along_dim":
        dim = ctx.concrete(ctx.arg(2, "dim"))
        pairs = [(ctx.arg(1, "indices"), None if dim is None else int(dim) % max(ndim, 1))]
    elif name == "take":
        pairs = [(ctx.arg(1, "index"), None)]
    elif name == "index":
        pairs = [(t, d) for d, t in enumerate(ctx.arg(1, "indices")) if t is not None]
    elif node.target is operator.getitem:
        pairs = _key_dims(ctx, ndim, node.args[1])
    else:
        return None
    if not pairs or not all(_is_index(ctx, t) for t, _ in pairs):
        return None
    dep = ctx.traced.depends_on_input()
    if not any(dep.get(t, False) for t, _ in pairs):
        return None
    nodes = [t for t, _ in pairs]
    dims = tuple(range(ndim)) if any(d is None for _, d in pairs) else tuple(sorted({d for _, d in pairs}))

    def read(xt: torch.Tensor, ids: list[torch.Tensor]) -> torch.Tensor:
        return run_on(ctx, {x: xt, **dict(zip(nodes, ids))})

    specs = [(ctx.shape(t), ctx.val(t).dtype, d) for t, d in pairs]
    src, pos, shape = _maps(read, tuple(ctx.val(x).shape), dims, specs)
    if shape != tuple(ctx.out.shape):
        return None
    op = Pick(tuple(ctx.val(x).shape), dims, src, pos, shape, [ctx.shape(t) for t in nodes])
    op.data = [x] + nodes
    return op

"""Writes at places the data decides: ``index_put``, ``scatter``, ``index_add``, ``index_copy`` (and their
in-place and reducing forms) whose indices are computed from the input (each token's slot in an expert's
buffer, a router's ``argsort``).

They are the mirror of :mod:`.gather`'s reads and live apart from them for size only: the same numbered
probes (:func:`.gather._maps`) tell which place of the base each written value lands on, and a live index
may move a value anywhere along the indexed dims. :mod:`.scatter`'s rules hand a write over to :func:`put`
when its indices depend on the input; constant indices keep :mod:`.scatter`'s exact maps.

Examples
--------
>>> import torch
>>> from connectome import analyze
>>> class Dispatch(torch.nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.a, self.r, self.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1), torch.nn.Linear(4, 2)
...     def forward(self, x):                              # (5 tokens, 4 features)
...         slot = self.r(x).squeeze(1).argsort()          # each token's slot: the data decides
...         return self.b(torch.zeros(5, 4).index_copy(0, slot, torch.relu(self.a(x))))
>>> m = Dispatch()
>>> with torch.no_grad(): m.a.weight[0] = 0
>>> res = analyze(m, input_shape=(5, 4))
>>> res.effective_masks["b.weight"][:, 0].any().item(), res.effective_masks["r.weight"].all().item()
(False, True)
>>> res.unsupported_ops
[]
"""

from __future__ import annotations

from math import prod

import numpy as np
import torch
from torch import fx

from ..status import Status
from .base import Ctx, Op
from .gather import _bits, _ctrl, _is_index, _maps, _name

aten = torch.ops.aten

__all__ = ["Put", "put"]


class Put(Op):
    """``base`` with values written (or added) at places along ``dims`` that index inputs decide.

    The values, laid out as the op reads them (``read_shape``: an ``index_put``'s broadcast values, a
    ``scatter``'s index region of ``src``), land on ``tgt`` (flat, in ``base`` reduced over ``dims``).
    Inputs: ``base``, the values (unless ``scalar`` is given: a filled number), then the index tensors.
    ``replace``: written values replace the base's (else they are added to it); ``base_nonzero``: where a
    constant base (``torch.zeros``) is nonzero, when known.
    """

    multi = True
    couples = True

    def __init__(
        self,
        base_shape: tuple,
        dims: tuple,
        tgt: np.ndarray,
        pos: list[np.ndarray],
        read_shape: tuple,
        idx_shapes: list[tuple],
        region: bool,
        scalar: float | None = None,
        replace: bool = True,
        base_nonzero: np.ndarray | None = None,
    ):
        self.base_shape, self.dims, self.tgt, self.pos, self.read_shape = base_shape, dims, tgt, pos, read_shape
        self.idx_shapes, self.region, self.scalar, self.replace = idx_shapes, region, scalar, replace
        self.base_nonzero = base_nonzero
        self.r_shape = tuple(1 if d in dims else n for d, n in enumerate(base_shape))
        self.nv = 0 if scalar is not None else 1
        self.ok = tgt >= 0

    def _values(self, ins: list[Status]) -> tuple[np.ndarray, bool]:
        if self.scalar is not None:
            return np.zeros(len(self.tgt), bool), self.scalar == 0
        v = ins[1]
        if self.region:
            full = v.full()[tuple(slice(0, n) for n in self.read_shape)]
        else:
            full = v.broadcast_to(self.read_shape).full()
        return np.ascontiguousarray(full).reshape(-1), v.zero

    def _reduce(self, full: np.ndarray) -> np.ndarray:
        return (full.any(axis=self.dims, keepdims=True) if self.dims else full).reshape(-1)

    def _base(self, base: Status) -> tuple[np.ndarray, bool]:
        """Where the base may be nonzero, and whether its dead elements are zero."""
        alive = base.broadcast_to(self.base_shape).full()
        if base.zero:
            return alive, True
        if self.base_nonzero is not None:
            return alive | self.base_nonzero, not self.base_nonzero.any()
        return np.ones(self.base_shape, bool), False

    def _moved(self, ins: list[Status], v: np.ndarray, vzero: bool) -> np.ndarray:
        """Per read element: whether moving it (a live index) may change the output."""
        if not vzero:
            return np.ones(len(self.tgt), bool)
        may = v.copy()
        if self.replace:  # an overwritten nonzero base element changes too
            b = self._reduce(self._base(ins[0])[0])
            may |= np.where(self.ok, b[np.maximum(self.tgt, 0)], False)
        return may

    def forward(self, ins: list[Status]) -> Status:
        base = ins[0]
        v, vzero = self._values(ins)
        n = prod(self.r_shape)
        acc = _bits(self.tgt, v, n)
        ctrl = _ctrl(ins[1 + self.nv :], self.pos, len(self.tgt))
        if ctrl.any():
            acc |= _bits(self.tgt, ctrl & self._moved(ins, v, vzero), n)
        out = base.broadcast_to(self.base_shape).full() | np.broadcast_to(acc.reshape(self.r_shape), self.base_shape)
        return Status.from_full(out, base.cdim if base.shape else 0).with_zero(self._base(base)[1] and vzero)

    def backward(self, ins: list[Status], out: Status, grad: Status) -> list[Status | None]:
        base = ins[0]
        gr = self._reduce(grad.full())
        gv = np.zeros(len(self.tgt), bool)
        gv[self.ok] = gr[self.tgt[self.ok]]
        res: list[Status | None] = [grad.reduce_to(base.shape)]
        if self.scalar is None:
            vs = ins[1]
            part = gv.reshape(self.read_shape)
            if self.region:
                whole = np.zeros(vs.shape, bool)
                whole[tuple(slice(0, n) for n in self.read_shape)] = part
                res.append(Status.from_full(whole, vs.cdim if vs.shape else 0))
            else:
                res.append(Status.from_full(part, -1).reduce_to(vs.shape))
        v, vzero = self._values(ins)
        may = gv & self._moved(ins, v, vzero)
        for s, p, shp in zip(ins[1 + self.nv :], self.pos, self.idx_shapes):
            res.append(Status.from_full(_bits(p, may, prod(shp)).reshape(shp), s.cdim if shp else 0))
        return res


_READS = {
    "index_put": "index",
    "_unsafe_index_put": "index",
    "scatter": "gather",
    "scatter_add": "gather",
    "scatter_reduce": "gather",
    "index_add": "index_select",
    "index_copy": "index_select",
    "index_reduce": "index_select",
    "index_fill": "index_select",
}


def put(ctx: Ctx) -> Op | None:
    """A :class:`Put` for a write whose indices depend on the input; None where it cannot tell."""
    try:
        return _put(ctx)
    except Exception:  # a form this does not read: the caller's fallback
        return None


def _put(ctx: Ctx) -> Op | None:
    name = _name(ctx).rstrip("_")
    kind = _READS.get(name)
    base = ctx.node.args[0] if ctx.node.args else None
    if kind is None or not isinstance(base, fx.Node):
        return None
    shape = ctx.shape(base)
    ndim = len(shape)
    scalar = None
    if kind == "index":
        indices, values = ctx.arg(1, "indices"), ctx.arg(2, "values")
        pairs = [(t, d) for d, t in enumerate(indices) if t is not None]
    else:
        dim = int(ctx.concrete(ctx.arg(1, "dim"))) % max(ndim, 1)
        values = ctx.arg(3, "src" if kind == "gather" else "source")
        if name == "index_fill":
            values = ctx.arg(3, "value")
        elif name == "scatter" and (values is None or "value" in ctx.node.kwargs):
            values = ctx.node.kwargs.get("value", values)
        pairs = [(ctx.arg(2, "index"), dim)]
    if not isinstance(values, fx.Node) or not isinstance(ctx.val(values), torch.Tensor):
        v = ctx.concrete(values)
        if not isinstance(v, (int, float, bool)):
            return None
        scalar = float(v)
    if not pairs or not all(_is_index(ctx, t) for t, _ in pairs):
        return None
    if not any(ctx.traced.depends_on_input().get(t, False) for t, _ in pairs):
        return None
    dims = tuple(sorted({d for _, d in pairs}))
    nodes = [t for t, _ in pairs]

    def read(bt: torch.Tensor, ids: list[torch.Tensor]) -> torch.Tensor:
        if kind == "index":
            full: list[torch.Tensor | None] = [None] * ndim
            for (_, d), i in zip(pairs, ids):
                full[d] = i
            return aten.index.Tensor(bt, full)
        i = ids[0].long()
        return bt.gather(dims[0], i) if kind == "gather" else bt.index_select(dims[0], i.reshape(-1))

    tgt, pos, read_shape = _maps(read, shape, dims, [(ctx.shape(t), ctx.val(t).dtype, d) for t, d in pairs])
    accumulate = (
        name in ("scatter_add", "index_add")
        or (kind == "index" and bool(ctx.concrete(ctx.arg(3, "accumulate", False))))
        or (name == "scatter_reduce" and ctx.concrete(ctx.arg(4, "reduce")) == "sum")
    )
    op = Put(
        shape,
        dims,
        tgt,
        pos,
        read_shape,
        [ctx.shape(t) for t in nodes],
        region=kind == "gather",
        scalar=scalar,
        replace=not accumulate,
        base_nonzero=_known_nonzero(ctx, base),
    )
    op.data = [base] + ([values] if scalar is None else []) + nodes
    return op


def _known_nonzero(ctx: Ctx, base: fx.Node) -> np.ndarray | None:
    """Where a constant base (``torch.zeros``, a buffer) is nonzero; None if it depends on the input."""
    if ctx.traced.depends_on_input().get(base, True) or ctx.val(base).numel() > 1 << 22:
        return None
    try:
        value = ctx.constant(base)
    except Exception:
        return None
    return (value != 0).numpy() if isinstance(value, torch.Tensor) and not value.is_complex() else None

"""Writes into a tensor: ``slice_scatter``, ``index_put``, ``index_copy``, ``copy``, ``index_add``,
``scatter_add`` and the fx :func:`~connectome.graph.mutation.write_back` of an in-place write into a view.

A write that *replaces* elements (``slice_scatter``, ``index_copy``, ``index_put``) only moves values:
each output element is one element of the base or of the source, an exact index map read off by
running the op on numbered tensors (:func:`~connectome.graph.lower.indexmap.index_map_op`). A write that
*accumulates* (``index_add``, ``scatter_add``, ``index_put(accumulate=True)``, the reductions) keeps the
base and adds every source element that lands on an element: an :class:`Accumulate` op, whose
targets are read off by indexing a numbered base the way the op does. Indices must be constants (a
buffer, ``arange``); computed ones write at any place along the indexed dims (:mod:`.put`).

Examples
--------
>>> import torch
>>> from connectome import analyze
>>> class Experts(torch.nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.e, self.o = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)
...     def forward(self, x):
...         out = torch.zeros_like(x)
...         out.index_add_(0, torch.tensor([1]), self.e(x[:1]))
...         return self.o(out)
>>> analyze(Experts(), input_shape=(2, 4)).params_effective
24
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from ..mutation import view_of, write_back
from ..status import Status
from .base import Ctx, Op, rule
from .fallback import Fallback
from .indexmap import index_map_op

aten = torch.ops.aten

__all__ = ["Accumulate"]


class Accumulate(Op):
    """``out = base``, plus source element ``k`` added onto base element ``target[k]`` (``-1``: dropped).

    Flat indices are C-order over the full tensors; without a base (``base=None``) the output starts dead.
    """

    multi = True

    def __init__(self, shape: tuple, src_shape: tuple, target: np.ndarray, base: int | None, src: int):
        self.shape, self.src_shape, self.base, self.src = tuple(shape), tuple(src_shape), base, src
        self.target = np.asarray(target, np.int64).reshape(-1)
        self.ok = self.target >= 0

    def forward(self, ins: list[Status]) -> Status:
        s = ins[self.src]
        if self.base is None:
            out, cdim, zero = np.zeros(int(np.prod(self.shape)), bool), (1 if len(self.shape) > 1 else 0), s.zero
        else:
            b = ins[self.base]
            out, cdim, zero = b.broadcast_to(self.shape).full().reshape(-1).copy(), b.cdim, b.zero and s.zero
        src = np.broadcast_to(s.full(), self.src_shape).reshape(-1)
        np.logical_or.at(out, self.target[self.ok], src[self.ok])
        return Status.from_full(out.reshape(self.shape), cdim).with_zero(zero)

    def backward(self, ins: list[Status], out: Status, grad: Status) -> list[Status | None]:
        res: list[Status | None] = [None] * len(ins)
        g = grad.full().reshape(-1)
        src = np.zeros(self.target.shape, bool)
        src[self.ok] = g[self.target[self.ok]]
        if self.base is not None:
            res[self.base] = grad.reduce_to(ins[self.base].shape)
        part = Status.from_full(src.reshape(self.src_shape), ins[self.src].cdim if ins[self.src].shape else 0)
        res[self.src] = part.reduce_to(ins[self.src].shape)
        return res


def _numbered(shape: tuple) -> torch.Tensor:
    return torch.arange(int(np.prod(shape)) if shape else 1, dtype=torch.float64).reshape(shape)


def _fallback_on_computed_index(fn):
    """A rule that reads its indices ahead of time: with indices that depend on the input (a router's argmax),
    the op is all-to-all, as any op without a rule."""

    def rule_fn(ctx: Ctx) -> Op:
        dep = ctx.traced.depends_on_input()
        data = ctx.tensor_args[0] if ctx.tensor_args else None
        if any(dep.get(a, False) for a in ctx.tensor_args if ctx.val(a).dtype in _INDEX_DTYPES and a is not data):
            from .put import put

            op = put(ctx)  # written at places the data decides: any place along the indexed dims
            return (
                op
                if op is not None
                else Fallback(ctx.out, [ctx.val(a) for a in ctx.tensor_args], "indices computed from the input")
            )
        return fn(ctx)

    rule_fn.__name__, rule_fn.__doc__ = fn.__name__, fn.__doc__
    return rule_fn


_INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)


def _accumulate(ctx: Ctx, base: Any, src: Any, target: torch.Tensor) -> Op:
    src_shape = ctx.shape(src)
    t = torch.full(src_shape, -1.0, dtype=torch.float64)
    region = tuple(slice(0, d) for d in target.shape)  # scatter_add reads src only where index has entries
    t[region] = target.to(torch.float64)
    op = Accumulate(
        tuple(ctx.out.shape), src_shape, t.numpy().astype(np.int64), ctx.input_index(base), ctx.input_index(src)
    )
    return op


@rule(write_back)
@_fallback_on_computed_index
def written_back(ctx: Ctx) -> Op:
    """An in-place write into a view, put back into its base (old and new values both kept: see mutation)."""
    base, value, chain = ctx.node.args
    known: Any = fx.node.map_aggregate(
        chain,
        lambda a: (
            (ctx.constant(a) if isinstance(ctx.val(a), torch.Tensor) else ctx.val(a)) if isinstance(a, fx.Node) else a
        ),
    )
    target = view_of(_numbered(ctx.shape(base)), known)
    target = torch.broadcast_to(target, ctx.shape(value)) if tuple(target.shape) != ctx.shape(value) else target
    return _accumulate(ctx, base, value, target)


@rule(nn.Fold, F.fold, aten.col2im)
@_fallback_on_computed_index
def fold(ctx: Ctx) -> Op:
    """``fold`` sums the blocks that overlap on an output element: the adjoint of ``unfold`` on the output."""
    x = ctx.tensor_args[0]
    if ctx.node.op == "call_module":
        m: Any = ctx.module
        params = {"kernel_size": m.kernel_size, "dilation": m.dilation, "padding": m.padding, "stride": m.stride}
    else:
        names = ("kernel_size", "dilation", "padding", "stride")
        params = {n: ctx.concrete(ctx.arg(2 + i, n)) for i, n in enumerate(names)}
    out_shape = tuple(ctx.out.shape)
    numbered = _numbered(out_shape if len(out_shape) == 4 else (1,) + out_shape) + 1
    target = F.unfold(numbered, **{k: v for k, v in params.items() if v is not None}) - 1  # padding reads 0
    target = target.reshape(ctx.shape(x))
    return Accumulate(out_shape, ctx.shape(x), target.numpy().astype(np.int64), None, ctx.input_index(x))


@rule(
    aten.index_add,
    aten.index_add_,
    torch.index_add,
    ".index_add",
    ".index_add_",
    aten.index_reduce,
    aten.index_reduce_,
    torch.index_reduce,
    ".index_reduce",
    ".index_reduce_",
    aten.scatter_add,
    aten.scatter_add_,
    torch.scatter_add,
    ".scatter_add",
    ".scatter_add_",
    aten.scatter_reduce,
    aten.scatter_reduce_,
    torch.scatter_reduce,
    ".scatter_reduce",
    ".scatter_reduce_",
)
@_fallback_on_computed_index
def index_add(ctx: Ctx) -> Op:
    """``index_add(base, dim, index, source)`` and ``scatter_add(base, dim, index, src)``: where each source
    element lands is where the op's indexing of a numbered base finds it (``index_select``, ``gather``)."""
    name = getattr(ctx.node.target, "__name__", str(ctx.node.target)).lstrip(".")
    scatter = name.startswith("scatter")
    base, dim, index = ctx.arg(0, "self"), ctx.arg(1, "dim"), ctx.arg(2, "index")
    src = ctx.arg(3, "src" if scatter else "source")
    numbered, d, idx = _numbered(ctx.shape(base)), int(ctx.concrete(dim)), ctx.constant(index).long()
    target = numbered.gather(d, idx) if scatter else numbered.index_select(d, idx)
    return _accumulate(ctx, base, src, target)


@rule(aten.index_put, aten.index_put_, aten._unsafe_index_put, torch.index_put, ".index_put", ".index_put_")
@_fallback_on_computed_index
def index_put(ctx: Ctx) -> Op:
    base, indices, values = ctx.arg(0, "self"), ctx.arg(1, "indices"), ctx.arg(2, "values")
    accumulate = bool(ctx.concrete(ctx.arg(3, "accumulate", False)))
    if not accumulate:
        return index_map_op(ctx, ctx.hints, [base, values])
    idx = tuple(ctx.constant(i) if i is not None else slice(None) for i in indices)
    target = _numbered(ctx.shape(base))[idx]
    return _accumulate(
        ctx,
        base,
        values,
        torch.broadcast_to(target, ctx.shape(values)) if tuple(target.shape) != ctx.shape(values) else target,
    )


@rule(
    aten.slice_scatter,
    aten.select_scatter,
    aten.diagonal_scatter,
    aten.as_strided_scatter,
    torch.slice_scatter,
    torch.select_scatter,
    torch.diagonal_scatter,
    torch.as_strided_scatter,
    ".slice_scatter",
    ".select_scatter",
    ".diagonal_scatter",
    aten.index_copy,
    aten.index_copy_,
    torch.index_copy,
    ".index_copy",
    ".index_copy_",
    aten.copy,
    aten.copy_,
    ".copy_",
    aten.scatter,
    aten.scatter_,
    torch.scatter,
    ".scatter",
    ".scatter_",
)
@_fallback_on_computed_index
def replace(ctx: Ctx) -> Op:
    """Writes that replace elements: an exact index map over (base, source)."""
    base = ctx.tensor_args[0]
    floats = [
        a for a in ctx.tensor_args[1:] if ctx.val(a).is_floating_point() or ctx.val(a).dtype == ctx.val(base).dtype
    ]
    if ctx.node.target in (aten.scatter, aten.scatter_, torch.scatter) or str(ctx.node.target) in (
        "scatter",
        "scatter_",
    ):
        if ctx.node.kwargs.get("reduce") is not None or len(ctx.node.args) > 4:
            idx = ctx.constant(ctx.arg(2, "index"))
            src = ctx.arg(3, "src")
            target = _numbered(ctx.shape(base)).gather(int(ctx.concrete(ctx.arg(1, "dim"))), idx.long())
            return _accumulate(ctx, base, src, target)
        src = ctx.arg(3, "src")
        if src not in ctx.tensor_args:  # a scalar written: each element is the base's or a constant
            from .elementwise import Elementwise

            op = Elementwise(tuple(ctx.out.shape), "union", False)
            op.data = [base]
            return op
        return index_map_op(ctx, ctx.hints, [base, src])
    return index_map_op(ctx, ctx.hints, [base] + floats[-1:])

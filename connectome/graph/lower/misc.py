"""Plumbing nodes: ``getitem`` on tuples and tensors, tensor attributes, and the conservative fallback.

An op with no rule becomes a :class:`Fallback`: every output element depends on every input element.
That can only call too many weights effective, never too few, and the op is listed in the report's
``unsupported_ops`` so that the user knows where the analysis is loose.
"""

from __future__ import annotations

import builtins
import operator
from typing import Any

import torch
from torch import fx

from .base import Ctx, Op, rule
from .elementwise import Elementwise
from .fallback import Constant, Fallback
from .indexmap import index_map_op

__all__ = ["Fallback", "Select", "Constant"]


class Select(Op):
    """``out = value[i]`` for a tuple-valued input."""

    def __init__(self, i: int, n: int):
        self.i, self.n = i, n

    def forward(self, ins: list[Any]) -> Any:
        v = ins[0]
        return v[self.i] if v is not None else None

    def backward(self, ins: list[Any], out: Any, grad: Any) -> list[Any]:
        g: list[Any] = [None] * self.n
        g[self.i] = grad
        return [tuple(g)]


@rule(
    torch.rand_like,
    torch.randn_like,
    torch.randint_like,
    torch.empty_like,
    ".new_empty",
    ".new_tensor",
    torch.ops.aten.rand_like,
    torch.ops.aten.randn_like,
    torch.ops.aten.randint_like,
    torch.ops.aten.empty_like,
    torch.ops.aten.new_empty,
)
def shape_only(ctx: Ctx) -> Op:
    """``rand_like(x)``, ``empty_like(x)``, ``x.new_tensor(data)``: values that do not depend on ``x``'s values
    (random or uninitialised ones are never folded as constants, so they get no zero patterns)."""
    op = Constant(ctx.out)
    op.data = []
    return op


@rule(
    torch.ops.aten.fill,
    torch.ops.aten.fill_,
    ".fill_",
    ".zero_",
    torch.ops.aten.zero_,
    torch.ops.aten.zero,
    torch.fill,
    torch.zero_,
)
def fill(ctx: Ctx) -> Op:
    """``x.fill_(v)``: every element is ``v``; only a tensor ``v`` that depends on the input carries signal."""
    value = ctx.arg(1, "value")
    if isinstance(value, fx.Node) and value in ctx.tensor_args and ctx.traced.depends_on_input().get(value, False):
        op: Op = Elementwise(tuple(ctx.out.shape), "union")
        op.data = [value]
        return op
    op = Constant(ctx.out)
    op.data = []
    return op


@rule(operator.getitem)
def getitem(ctx: Ctx) -> Op:
    args: Any = ctx.node.args
    src = args[0]
    v = ctx.val(src)
    if isinstance(v, (tuple, list)):
        return Select(int(args[1]), len(v))
    data = [src] if src in ctx.tensor_args else None
    from .gather import picked

    op = picked(ctx)  # ``x[idx]`` with ``idx`` computed from the input
    if op is not None:
        return op
    try:
        return index_map_op(ctx, ctx.hints, data)
    except Exception as e:  # indexing with a computed tensor cannot be read off ahead of time
        return Fallback(ctx.out, [ctx.val(a) for a in ctx.tensor_args], f"indexing by a computed tensor ({e})")


@rule(builtins.getattr)
def tensor_attribute(ctx: Ctx) -> Op:
    src = ctx.val(ctx.node.args[0])
    if isinstance(src, tuple):  # a named field of a tuple result: torch.cummax(x, 1).values
        field = getattr(src, str(ctx.node.args[1]))
        return Select(next(i for i, v in enumerate(src) if v is field), len(src))
    return index_map_op(ctx, ctx.hints)  # x.T, x.mT, x.data

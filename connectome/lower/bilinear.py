"""Products of two activations: matmul, bmm, einsum, and linear layers whose weight is computed.

For ``out = f(a, b)`` with ``f`` bilinear, a term ``a_i * b_j`` carries signal if either factor is alive
and neither is a silencing zero (see :mod:`connectome.lower.elementwise`). With ``m = alive | not zero``
("may be nonzero") the output is alive where ``f(alive_a, m_b) + f(m_a, alive_b) > 0``, and ``a`` matters
to the output where the gradient of ``sum(g * f(a, m_b))`` is positive: exact for nonnegative inputs, and
computed by torch itself, so broadcasting and einsum equations need no code of their own.
"""
from __future__ import annotations

import operator
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..status import Status
from .base import Ctx, Op, rule
from .mixing import Mixing

aten = torch.ops.aten

__all__ = ["Bilinear"]


class Bilinear(Op):
    """``out = f(a, b)`` for a bilinear torch function ``f`` of two activations."""

    multi = True

    def __init__(self, f: Callable, shapes: list[tuple], out_shape: tuple, order: list[int]):
        self.f, self.shapes, self.out_shape, self.order = f, shapes, out_shape, order

    def _fab(self, ins: list[Status]) -> tuple[Status, Status]:
        return ins[self.order[0]], ins[self.order[1]]

    def forward(self, ins: list[Status]) -> Status:
        a, b = self._fab(ins)
        fa, fb = _t(a.full()), _t(b.full())
        ma, mb = (fa if a.zero else torch.ones_like(fa)), (fb if b.zero else torch.ones_like(fb))
        out = (self.f(fa, mb) + self.f(ma, fb)) > 0
        return Status.from_full(out.numpy(), -1).with_zero(a.zero or b.zero)

    def backward(self, ins: list[Status], out: Status, grad: Status) -> list[Status | None]:
        a, b = self._fab(ins)
        fa, fb = _t(a.full()), _t(b.full())
        ma, mb = (fa if a.zero else torch.ones_like(fa)), (fb if b.zero else torch.ones_like(fb))
        g = _t(grad.full())
        A = torch.zeros_like(fa, requires_grad=True)
        B = torch.zeros_like(fb, requires_grad=True)
        with torch.enable_grad():
            ga, = torch.autograd.grad((self.f(A, mb) * g).sum(), A, allow_unused=True)
            gb, = torch.autograd.grad((self.f(ma, B) * g).sum(), B, allow_unused=True)
        res: list[Status | None] = [None] * len(ins)
        parts = [Status.from_full((ga > 0).numpy() if ga is not None else np.zeros(a.shape, bool), -1),
                 Status.from_full((gb > 0).numpy() if gb is not None else np.zeros(b.shape, bool), -1)]
        for k, j in enumerate(self.order):
            res[j] = parts[k] if res[j] is None else _or(res[j], parts[k])
        return res


def _or(a: Status, b: Status) -> Status:
    from ..status import union
    return union([a, b])


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32)


def _order(ctx: Ctx, nodes: list) -> list[int]:
    return [ctx.input_index(n) for n in nodes]


@rule(torch.matmul, operator.matmul, torch.bmm, torch.mm, ".matmul", ".bmm", ".mm", ".__matmul__",
      aten.matmul, aten.bmm, aten.mm)
def matmul(ctx: Ctx) -> Op:
    a, b = ctx.node.args[0], ctx.node.args[1]
    out_shape = tuple(ctx.out.shape)
    wb = ctx.weight(b, "linear") if isinstance(b, torch.fx.Node) else None
    if wb is not None and len(ctx.shape(b)) == 2 and a in ctx.tensor_args:  # x @ W: a linear layer
        op = Mixing(wb, wb.mask.t().unsqueeze(-1), 1, ctx.shape(a), out_shape, len(ctx.shape(a)) - 1, None,
                    to_param=lambda eff: eff.squeeze(-1).t())
        op.data = [a]
        return op
    from .linear import _transposed_weight
    wt = _transposed_weight(ctx, b)
    if wt is not None and a in ctx.tensor_args:  # x @ W.t() (core ATen mm)
        op = Mixing.linear(wt, wt.mask, ctx.shape(a), out_shape)
        op.data = [a]
        return op
    return Bilinear(lambda x, y: torch.matmul(x, y), [ctx.shape(a), ctx.shape(b)], out_shape, _order(ctx, [a, b]))


@rule(torch.einsum, aten.einsum)
def einsum(ctx: Ctx) -> Op:
    eq = ctx.node.args[0]
    ops = ctx.node.args[1:] if not isinstance(ctx.node.args[1], (list, tuple)) else ctx.node.args[1]
    ops = list(ops)
    if len(ops) == 1:
        from .misc import Fallback
        return Fallback(ctx.out, [ctx.val(ops[0])], "einsum with one operand")
    if len(ops) != 2 or not all(o in ctx.tensor_args for o in ops):
        from .misc import Fallback
        return Fallback(ctx.out, [ctx.val(a) for a in ctx.tensor_args], "einsum with more than two operands")
    return Bilinear(lambda x, y: torch.einsum(eq, x, y), [ctx.shape(o) for o in ops], tuple(ctx.out.shape),
                    _order(ctx, ops))


def linear_with_computed_weight(ctx: Ctx) -> Op:
    """``F.linear(x, w)`` where ``w`` is an activation rather than a parameter."""
    x, w = ctx.arg(0, "input"), ctx.arg(1, "weight")
    return Bilinear(lambda a, b: F.linear(a, b), [ctx.shape(x), ctx.shape(w)], tuple(ctx.out.shape),
                    _order(ctx, [x, w]))

"""Sums, differences, comparisons, logical ops, ``maximum``/``minimum``, ``lerp``, ``masked_fill`` and ``where``.

Each output element depends on every input element it is broadcast from, as in a sum: an
:class:`~connectome.graph.lower.elementwise.Elementwise` "union". A nonzero scalar operand (``x + 1``)
shifts dead values, so the result is not a silencing zero. ``where`` and ``masked_fill`` whose condition
is a constant (a causal mask buffer) pick each element from one side only: the exact :class:`Where`.

Examples
--------
>>> import torch
>>> from connectome import analyze
>>> class Masked(torch.nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.a, self.b = torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)
...         self.register_buffer("keep", torch.tensor([True, False, True]))
...     def forward(self, x):
...         return self.b(torch.where(self.keep, self.a(x), 0.0))  # unit 1 is always 0
>>> res = analyze(Masked(), input_shape=(1, 4))
>>> res.effective_masks["a.weight"].any(1).tolist(), res.unsupported_ops
([True, False, True], [])
"""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch import fx

from ..status import Status, union
from .base import Ctx, Op, rule
from .elementwise import Elementwise

aten = torch.ops.aten

__all__ = ["Where", "additive"]


@rule(
    operator.add,
    operator.sub,
    operator.iadd,
    operator.isub,
    torch.add,
    torch.sub,
    torch.subtract,
    torch.rsub,
    torch.where,
    torch.maximum,
    torch.minimum,
    torch.fmax,
    torch.fmin,
    ".add",
    ".add_",
    ".sub",
    ".sub_",
    ".rsub",
    ".where",
    ".maximum",
    ".minimum",
    ".masked_fill",
    ".masked_fill_",
    torch.masked_fill,
    torch.lerp,
    ".lerp",
    aten.add,
    aten.add_,
    aten.sub,
    aten.sub_,
    aten.rsub,
    aten.where,
    aten.maximum,
    aten.minimum,
    aten.masked_fill,
    aten.masked_fill_,
    aten.lerp,
    operator.gt,
    operator.lt,
    operator.ge,
    operator.le,
    operator.eq,
    operator.ne,
    torch.gt,
    torch.lt,
    torch.ge,
    torch.le,
    torch.eq,
    torch.ne,
    ".gt",
    ".lt",
    ".ge",
    ".le",
    ".eq",
    ".ne",
    aten.gt,
    aten.lt,
    aten.ge,
    aten.le,
    aten.eq,
    aten.ne,
    operator.and_,
    operator.or_,
    operator.xor,
    torch.logical_and,
    torch.logical_or,
    aten.logical_and,
    aten.logical_or,
    aten.bitwise_and,
    aten.bitwise_or,
)
def additive(ctx: Ctx) -> Op:
    picked = _where_by_constant(ctx)
    if picked is not None:
        return picked
    n_const = _scalar_operands(ctx)
    op = Elementwise(tuple(ctx.out.shape), "union", False if n_const else None)
    name = getattr(ctx.node.target, "__name__", str(ctx.node.target)).lstrip(".").split(".")[0]
    # lerp weighs one input by another; where, maximum and masked_fill pick by values: a constant matters there
    op.couples = name.rstrip("_") in ("lerp", "where", "maximum", "minimum", "fmax", "fmin", "masked_fill")
    return op


class Where(Op):
    """``where(cond, a, b)`` with a constant ``cond``: each element is ``a``'s or ``b``'s, as ``cond`` says.

    ``a`` and ``b`` are tensor-input positions, or None for a scalar (a constant, nonzero unless ``0``).
    """

    multi = True

    def __init__(self, cond: np.ndarray, a: int | None, b: int | None, scalar_zero: tuple[bool, bool]):
        self.cond, self.a, self.b, self.scalar_zero = cond, a, b, scalar_zero

    def _side(self, ins: list[Status], i: int | None) -> np.ndarray:
        if i is None:
            return np.zeros(self.cond.shape, bool)
        return ins[i].broadcast_to(self.cond.shape).full()

    def forward(self, ins: list[Status]) -> Status:
        out = np.where(self.cond, self._side(ins, self.a), self._side(ins, self.b))
        zeros = [ins[i].zero if i is not None else z for i, z in zip((self.a, self.b), self.scalar_zero)]
        zero = (zeros[0] or not self.cond.any()) and (zeros[1] or self.cond.all())
        return Status.from_full(out, _cdim_of(ins, self.cond.ndim)).with_zero(bool(zero))

    def backward(self, ins: list[Status], out: Status, grad: Status) -> list[Status | None]:
        g = grad.broadcast_to(self.cond.shape).full()
        res: list[Status | None] = [None] * len(ins)
        for i, part in ((self.a, g & self.cond), (self.b, g & ~self.cond)):
            if i is not None:
                st = Status.from_full(part, ins[i].cdim if ins[i].shape else 0).reduce_to(ins[i].shape)
                prev = res[i]
                res[i] = st if prev is None else union([prev, st])
        return res


def _cdim_of(ins: list[Status], ndim: int) -> int:
    for s in ins:
        if len(s.shape) == ndim:
            return s.cdim
    return 1 if ndim > 1 else 0


def _where_by_constant(ctx: Ctx) -> Op | None:
    """``where(cond, a, b)`` / ``masked_fill(x, mask, v)`` whose condition is a constant, as a :class:`Where`."""
    name = getattr(ctx.node.target, "__name__", str(ctx.node.target)).lstrip(".").split(".")[0]
    if name == "where" and len(ctx.node.args) == 3:
        cond, a, b = ctx.node.args
    elif name.startswith("masked_fill") and len(ctx.node.args) >= 3:
        b, cond, a = ctx.node.args[:3]
    else:
        return None
    if not isinstance(cond, fx.Node) or ctx.traced.depends_on_input().get(cond, True):
        return None
    try:
        c = ctx.constant(cond)
    except Exception:
        return None
    out = tuple(ctx.out.shape)
    if not isinstance(c, torch.Tensor) or c.dtype != torch.bool:
        return None
    pos = [ctx.input_index(v) if isinstance(v, fx.Node) and v in ctx.tensor_args else None for v in (a, b)]
    za, zb = (
        bool(ctx.concrete(v) == 0) if not isinstance(ctx.val(v), torch.Tensor) else True for v in (a, b)
    )  # a scalar (or a size read off the input) is zero only if it is 0
    return Where(np.ascontiguousarray(np.broadcast_to(c.numpy(), out)), pos[0], pos[1], (za, zb))


def _scalar_operands(ctx: Ctx) -> int:
    """How many operands are nonzero Python scalars or constant tensors (they shift dead values)."""
    n = 0
    for a in ctx.node.args[:2]:
        if isinstance(a, (int, float)) and a != 0 and not isinstance(a, bool):
            n += 1
    return n

"""Products of two activations: matmul, bmm, einsum, and linear layers whose weight is computed.

For ``out = f(a, b)`` with ``f`` bilinear, a term ``a_i * b_j`` carries signal if either factor is alive
and neither is a silencing zero (see :mod:`connectome.graph.lower.elementwise`). With ``m = alive | not zero``
("may be nonzero") the output is alive where ``f(alive_a, m_b) + f(m_a, alive_b) > 0``, and ``a`` matters
to the output where the gradient of ``sum(g * f(a, m_b))`` is positive: exact for nonnegative inputs, and
computed by torch itself, so broadcasting and einsum equations need no code of their own.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..status import Status, gathered, union
from .base import Ctx, Op, Weight, rule, transposed_weight
from .fallback import Fallback
from .mixing import Mixing

aten = torch.ops.aten

__all__ = ["Bilinear"]


class Bilinear(Op):
    """``out = f(a, b)`` for a bilinear torch function ``f`` of two operands.

    One operand may be a prunable weight (``wslot`` 0 or 1: a raw parameter in ``einsum``, ``W @ x``,
    ``addmm``): it is dead from input and may be nonzero exactly where its mask is 1, and its effective
    mask is where it joins an alive factor to an output that is alive to the outputs.
    """

    multi = True
    couples = True

    def __init__(
        self,
        f: Callable,
        shapes: list[tuple],
        out_shape: tuple,
        order: list[int],
        weight: Weight | None = None,
        wslot: int | None = None,
    ):
        self.f, self.shapes, self.out_shape, self.order = f, shapes, out_shape, order
        self.wslot = wslot if weight is not None else None
        self.weights = [weight] if weight is not None else []

    def _operands(self, ins: list[Status]) -> tuple[list[torch.Tensor], list[torch.Tensor], bool, bool]:
        """Alive-from-input and may-be-nonzero, as float tensors, of both factors; and their ``zero``."""
        alive, maybe, zeros = [], [], []
        for k, j in enumerate(self.order):
            if k == self.wslot:
                m = self.weights[0].mask.to(torch.float32)
                alive.append(torch.zeros_like(m))
                maybe.append(m)
                zeros.append(False)  # a weight is a nonzero constant where its mask is 1
                continue
            s = ins[j]
            f = _t(s.full())
            alive.append(f)
            maybe.append(f if s.zero else torch.ones_like(f))
            zeros.append(s.zero)
        return alive, maybe, zeros[0], zeros[1]

    def forward(self, ins: list[Status]) -> Status:
        (fa, fb), (ma, mb), za, zb = self._operands(ins)
        out = (self.f(fa, mb) + self.f(ma, fb)) > 0
        return Status.from_full(out.numpy(), -1).with_zero(za or zb)

    def _grads(self, ins: list[Status], grad: Status) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Where each factor reaches an alive-to-output element of the product (through the other)."""
        (fa, fb), (ma, mb), _, _ = self._operands(ins)
        g = _t(grad.full())
        A = torch.zeros_like(fa, requires_grad=True)
        B = torch.zeros_like(fb, requires_grad=True)
        # a weight factor counts only where it meets alive signal: its partner's alive part, not its may-be part
        oa = fa if self.wslot == 1 else ma
        ob = fb if self.wslot == 0 else mb
        with torch.enable_grad():
            (ga,) = torch.autograd.grad((self.f(A, ob) * g).sum(), A, allow_unused=True)
            (gb,) = torch.autograd.grad((self.f(oa, B) * g).sum(), B, allow_unused=True)
        return ga, gb

    def backward(self, ins: list[Status], out: Status, grad: Status) -> list[Status | None]:
        ga, gb = self._grads(ins, grad)
        return gathered(
            len(ins),
            [
                (j, Status.from_full((gr > 0).numpy() if gr is not None else np.zeros(ins[j].shape, bool), -1))
                for k, (j, gr) in enumerate(zip(self.order, (ga, gb)))
                if k != self.wslot
            ],
        )

    def effective(self, ins: list[Status], grad: Any) -> dict[str, torch.Tensor]:
        done = self.unreached(grad)  # answers for a None grad
        if done is not None:
            return done
        w = self.weights[0]
        wslot: Any = self.wslot  # set whenever there is a weight
        gr = self._grads(ins, grad)[wslot]
        return {w.name: w.mask & (gr > 0) if gr is not None else torch.zeros_like(w.mask)}


def product(ctx: Ctx, f: Callable, a, b, kind: str = "linear") -> Op:
    """The op for ``f(a, b)``, bilinear: a product of activations, or of an activation and a weight."""
    shapes = [ctx.shape(a), ctx.shape(b)]
    dep = ctx.traced.depends_on_input()
    for slot, w in ((1, b), (0, a)):
        other = a if slot == 1 else b
        if isinstance(w, torch.fx.Node) and not dep.get(w, True) and dep.get(other, False):
            weight = ctx.weight(w, kind)
            if weight is not None:
                op = Bilinear(f, shapes, tuple(ctx.out.shape), _order(ctx, [a, b]), weight, slot)
                return op
    return Bilinear(f, shapes, tuple(ctx.out.shape), _order(ctx, [a, b]))


def _or(a: Status, b: Status) -> Status:
    from ..status import union

    return union([a, b])


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32)


def _order(ctx: Ctx, nodes: list) -> list[int]:
    return [ctx.input_index(n) for n in nodes]


@rule(
    torch.matmul,
    operator.matmul,
    torch.bmm,
    torch.mm,
    ".matmul",
    ".bmm",
    ".mm",
    ".__matmul__",
    aten.matmul,
    aten.bmm,
    aten.mm,
)
def matmul(ctx: Ctx) -> Op:
    from .moe import selected_product

    routed = selected_product(ctx)  # bmm(W[idx], x): one expert's matrix per row (mixture of experts)
    if routed is not None:
        return routed
    a, b = ctx.node.args[0], ctx.node.args[1]
    out_shape = tuple(ctx.out.shape)
    wb = ctx.weight(b, "linear") if isinstance(b, torch.fx.Node) else None
    if wb is not None and len(ctx.shape(b)) == 2 and a in ctx.tensor_args:  # x @ W: a linear layer
        op = Mixing(
            wb,
            wb.mask.t().unsqueeze(-1),
            1,
            ctx.shape(a),
            out_shape,
            len(ctx.shape(a)) - 1,
            None,
            to_param=lambda eff: eff.squeeze(-1).t(),
        )
        op.data = [a]
        return op
    wt = transposed_weight(ctx, b)
    if wt is not None and a in ctx.tensor_args:  # x @ W.t() (core ATen mm)
        op = Mixing.linear(wt, wt.mask, ctx.shape(a), out_shape)
        op.data = [a]
        return op
    return product(ctx, torch.matmul, a, b)


@rule(torch.einsum, aten.einsum)
def einsum(ctx: Ctx) -> Op:
    eq = ctx.node.args[0]
    ops = ctx.node.args[1:] if not isinstance(ctx.node.args[1], (list, tuple)) else ctx.node.args[1]
    ops = list(ops)
    if len(ops) == 1:
        return Fallback(ctx.out, [ctx.val(ops[0])], "einsum with one operand")
    if len(ops) != 2 or not all(o in ctx.tensor_args for o in ops):
        return Fallback(ctx.out, [ctx.val(a) for a in ctx.tensor_args], "einsum with more than two operands")
    return product(ctx, lambda x, y: torch.einsum(eq, x, y), ops[0], ops[1])


def linear_with_computed_weight(ctx: Ctx) -> Op:
    """``F.linear(x, w)`` where ``w`` is an activation rather than a parameter."""
    x, w = ctx.arg(0, "input"), ctx.arg(1, "weight")
    return product(ctx, F.linear, x, w)


@rule(torch.baddbmm, ".baddbmm", aten.baddbmm, torch.addbmm, ".addbmm", aten.addbmm)
def baddbmm(ctx: Ctx) -> Op:
    """``beta * input + alpha * (b1 @ b2)``, batched (``addbmm`` sums over the batch too)."""
    b1, b2 = ctx.arg(1, "batch1"), ctx.arg(2, "batch2")
    summed = getattr(ctx.node.target, "__name__", str(ctx.node.target)).lstrip(".").startswith(
        "addbmm"
    ) or "addbmm" in str(ctx.node.target)
    f = (lambda x, y: torch.bmm(x, y).sum(0)) if summed else torch.bmm
    return plus_term(ctx, product(ctx, f, b1, b2), ctx.arg(0, "input"))


@rule(torch.tensordot, aten.tensordot)
def tensordot(ctx: Ctx) -> Op:
    a, b = ctx.arg(0, "a"), ctx.arg(1, "b")
    dims = ctx.concrete(ctx.arg(2, "dims", 2))
    if isinstance(ctx.node.target, torch._ops.OpOverload):  # aten.tensordot(a, b, dims_a, dims_b)
        dims = (ctx.concrete(ctx.arg(2, "dims_self")), ctx.concrete(ctx.arg(3, "dims_other")))
    return product(ctx, lambda x, y: torch.tensordot(x, y, dims), a, b)


class PlusTerm(Op):
    """``inner(...) + term``, with ``term`` an activation broadcast to the output (``addmm``'s input).

    ``reads`` are the positions, among this op's inputs, of the inputs ``inner`` reads.
    """

    multi = True

    def __init__(self, inner: Op, reads: list[int], term: int, out_shape: tuple):
        self.inner, self.reads, self.term, self.out_shape = inner, reads, term, out_shape
        self.weights = inner.weights

    def forward(self, ins: list[Status]) -> Status:
        from .elementwise import aligned

        a, t = aligned([self.inner.forward([ins[i] for i in self.reads]), ins[self.term]], self.out_shape)
        return union([a, t]).with_zero(a.zero and t.zero)

    def backward(self, ins: list[Status], out: Status, grad: Status) -> list[Status | None]:
        parts = self.inner.backward([ins[i] for i in self.reads], out, grad)
        return gathered(len(ins), list(zip(self.reads, parts)) + [(self.term, grad.reduce_to(ins[self.term].shape))])

    def effective(self, ins: list[Status], grad: Status | None) -> dict[str, torch.Tensor]:
        return self.inner.effective([ins[i] for i in self.reads], grad)


def plus_term(ctx: Ctx, op: Op, term) -> Op:
    """``op`` plus an added tensor: unchanged when the term is a constant (a bias), else a :class:`PlusTerm`."""
    if not isinstance(term, torch.fx.Node) or not ctx.traced.depends_on_input().get(term, False):
        return op
    reads = [ctx.input_index(a) for a in op.data] if op.data is not None else list(range(len(ctx.tensor_args)))
    return PlusTerm(op, reads, ctx.input_index(term), tuple(ctx.out.shape))

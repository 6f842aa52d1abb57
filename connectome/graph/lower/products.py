"""Products and quotients: ``a * b``, ``a / b``, ``a // b``, ``a % b``, ``addcmul`` and ``addcdiv``.

A factor that is exactly zero wherever it is dead silences the product there (a ``relu`` gate), so the
other factor matters only where it is alive: an :class:`~connectome.graph.lower.elementwise.Elementwise`
"mul" or "div". A constant factor with zeros (a scale vector, LayerScale's gamma) silences it where it is
zero; ``addcmul``/``addcdiv`` add such a product term to a third input (:class:`AddProduct`).

Examples
--------
>>> import torch
>>> from connectome import analyze
>>> class Gated(torch.nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.a, self.b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
...         self.c = torch.nn.Linear(3, 2)
...     def forward(self, x):
...         return self.c(torch.relu(self.a(x)) * self.b(x))
>>> m = Gated()
>>> with torch.no_grad(): m.a.weight[0], m.a.bias[0] = 0, 0     # gate 0 is dead: always 0
>>> res = analyze(m, input_shape=(1, 4))
>>> res.effective_masks["b.weight"].any(1).tolist(), res.unsupported_ops
([False, True, True], [])
"""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch import fx

from ..status import Status, union
from .base import Ctx, Op, rule
from .elementwise import Elementwise, aligned

aten = torch.ops.aten

__all__ = ["AddProduct", "multiply", "divide", "add_product"]


@rule(operator.mul, operator.imul, torch.mul, torch.multiply, ".mul", ".mul_", aten.mul, aten.mul_)
def multiply(ctx: Ctx) -> Op:
    out = tuple(ctx.out.shape)
    if len(ctx.tensor_args) < 2:
        return Elementwise(out, "union")
    return Elementwise(out, "mul", nonzero=_constant_nonzero(ctx, out))


def _constant_nonzero(ctx: Ctx, shape: tuple) -> np.ndarray | None:
    """Where constant factors (a scale vector, LayerScale's gamma) are nonzero, if some entry is zero."""
    dep = ctx.traced.depends_on_input()
    found = None
    for a in ctx.tensor_args:
        if dep.get(a, True) or ctx.val(a).numel() > 1 << 20:
            continue
        try:
            value = ctx.constant(a)
        except Exception:
            continue
        if isinstance(value, torch.Tensor) and not value.is_complex() and not bool(value.all()):
            nz = np.broadcast_to((value != 0).numpy(), shape)
            found = nz if found is None else found & nz
    return None if found is None else np.ascontiguousarray(found)


@rule(
    operator.truediv,
    operator.itruediv,
    operator.floordiv,
    torch.div,
    torch.true_divide,
    torch.floor_divide,
    ".div",
    ".div_",
    ".true_divide",
    ".floor_divide",
    aten.div,
    aten.div_,
    aten.floor_divide,
    operator.mod,
    torch.remainder,
    torch.fmod,
    ".remainder",
    ".fmod",
    aten.remainder,
    aten.fmod,
)
def divide(ctx: Ctx) -> Op:
    """``a / b``, ``a // b``, ``a % b``: zero where ``a`` is (a dead exact-zero ``a`` silences it)."""
    node = ctx.node
    first_is_tensor = bool(node.args) and node.args[0] in ctx.tensor_args
    if not first_is_tensor:  # scalar / tensor is a nonzero constant where the tensor is dead
        return Elementwise(tuple(ctx.out.shape), "union", False)
    return Elementwise(tuple(ctx.out.shape), "div" if len(ctx.tensor_args) > 1 else "union")


class AddProduct(Op):
    """``addcmul(x, a, b, value) = x + value * a * b`` and ``addcdiv`` (``x + value * a / b``): the product
    term is an :class:`Elementwise` "mul" or "div" (a dead exact-zero factor silences it), added to ``x``.

    Inputs are ``x, a, b`` in that order (one node may be several of them); ``value == 0`` drops the term.
    """

    multi = True
    couples = True

    def __init__(self, shape: tuple, kind: str, keep: bool):
        self.shape, self.keep = tuple(shape), keep
        self.term = Elementwise(shape, kind)

    def forward(self, ins: list[Status]) -> Status:
        x = ins[0]
        if not self.keep:
            return x.broadcast_to(self.shape)
        t = self.term.forward(ins[1:])
        al = aligned([x, t], self.shape)
        return union(al).with_zero(x.zero and t.zero)

    def backward(self, ins: list[Status], out: Status, grad: Status) -> list[Status | None]:
        gx = grad.reduce_to(ins[0].shape)
        if not self.keep:
            return [gx, None, None]
        t = self.term.forward(ins[1:])
        return [gx] + self.term.backward(ins[1:], t, grad)


@rule(
    torch.addcmul,
    torch.addcdiv,
    ".addcmul",
    ".addcmul_",
    ".addcdiv",
    ".addcdiv_",
    aten.addcmul,
    aten.addcmul_,
    aten.addcdiv,
    aten.addcdiv_,
)
def add_product(ctx: Ctx) -> Op:
    name = getattr(ctx.node.target, "__name__", str(ctx.node.target)).lstrip(".").split(".")[0]
    nodes = [
        ctx.arg(0, "self" if isinstance(ctx.node.target, torch._ops.OpOverload) else "input"),
        ctx.arg(1, "tensor1"),
        ctx.arg(2, "tensor2"),
    ]
    value = ctx.concrete(ctx.node.kwargs.get("value", ctx.node.args[3] if len(ctx.node.args) > 3 else 1))
    if not all(isinstance(n, fx.Node) and n in ctx.tensor_args for n in nodes) or isinstance(value, torch.Tensor):
        sum_ = Elementwise(tuple(ctx.out.shape), "union")  # a scalar operand, a tensor value: as a sum
        sum_.couples = True
        return sum_
    op = AddProduct(
        tuple(ctx.out.shape),
        "div" if name.startswith("addcdiv") else "mul",
        not (isinstance(value, (int, float)) and value == 0),
    )
    op.data = nodes
    return op

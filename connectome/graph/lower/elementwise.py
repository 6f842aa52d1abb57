"""Elementwise ops: activations, dropout, casts and clamps, and :class:`Elementwise`, the op of them all.

An activation maps each element to itself: a unit is alive after it iff alive before it. The only
difference between activations is whether a dead (zero) input stays zero (``relu``) or becomes a
nonzero constant (``sigmoid``): the latter cannot silence a product, so in ``x * sigmoid(s)`` the
factor ``x`` passes whether or not ``s`` is alive, while ``s`` matters only where ``x`` is alive.

The op-name tables are in :mod:`.optables`; sums, comparisons and ``where`` in :mod:`.additive`;
products and quotients (gates) in :mod:`.products`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..status import Status, combine
from .base import Ctx, Op, rule
from .optables import (
    NONZERO_FUNCS,
    NONZERO_METHODS,
    NONZERO_MODULES,
    ZERO_KEEPING_FUNCS,
    ZERO_KEEPING_METHODS,
    ZERO_KEEPING_MODULES,
)

aten = torch.ops.aten

__all__ = ["Elementwise", "aligned"]


def aligned(ins: list[Status], shape: tuple) -> list[Status]:
    """Inputs broadcast to ``shape`` and laid out with one channel dim."""
    b = [s.broadcast_to(shape) for s in ins]
    cdim = max(b, key=lambda s: s.channels).cdim if b else 0
    return [s.with_cdim(cdim) for s in b]


class Elementwise(Op):
    """``kind``: "union" (output depends on every input), "mul" or "div" (first input / second)."""

    multi = True

    def __init__(
        self,
        shape: tuple,
        kind: str = "union",
        zero: bool | None = None,
        in_shapes: list[tuple] | None = None,
        nonzero: np.ndarray | None = None,
    ):
        self.shape, self.kind, self.zero, self.in_shapes = tuple(shape), kind, zero, in_shapes or []
        self.couples = kind in ("mul", "div")
        self.nonzero = nonzero  # a product with a constant that has zeros: where the product can be nonzero

    def _kills(self, ins: list[Status]) -> list[bool]:
        # a factor that is exactly zero wherever it is dead silences the product there
        if self.kind == "mul":
            return [s.zero for s in ins]
        if self.kind == "div":
            return [ins[0].zero] + [False] * (len(ins) - 1)
        return [False] * len(ins)

    def forward(self, ins: list[Status]) -> Status:
        if not ins:
            return Status.uniform(self.shape, 1, False).with_zero(bool(self.zero))
        if len(ins) == 1 and ins[0].shape == self.shape:  # activations: the status passes unchanged
            return ins[0].with_zero(ins[0].zero if self.zero is None else self.zero)
        al = aligned(ins, self.shape)
        kills = self._kills(ins)

        def fn(*xs: np.ndarray) -> np.ndarray:
            out = np.logical_or.reduce(xs)
            for x, k in zip(xs, kills):
                if k:
                    out &= x
            return out

        out = combine(al, fn)
        if self.nonzero is not None:
            out = Status.from_full(out.full() & self.nonzero, out.cdim)
        if self.zero is not None:
            zero = self.zero
        elif self.kind == "mul":
            zero = any(s.zero for s in ins)
        elif self.kind == "div":
            zero = ins[0].zero
        else:
            zero = all(s.zero for s in ins)
        return out.with_zero(zero)

    def backward(self, ins: list[Status], out: Status, grad: Status) -> list[Status | None]:
        if len(ins) == 1 and ins[0].shape == self.shape:
            return [grad]
        kills = self._kills(ins)
        al = aligned(ins, self.shape)
        g = grad.broadcast_to(self.shape).with_cdim(al[0].cdim) if al else grad
        if self.nonzero is not None:
            g = Status.from_full(g.full() & self.nonzero, g.cdim)
        res: list[Status | None] = []
        for j, s in enumerate(ins):
            others = [al[k] for k in range(len(ins)) if k != j and kills[k]]
            gj = combine([g] + others, lambda gg, *xs: gg & np.logical_and.reduce(xs)) if others else g
            res.append(gj.reduce_to(s.shape))
        return res


def _zero_of(kind: str, zero: bool | None) -> Callable[[Ctx], Op]:
    def make(ctx: Ctx) -> Op:
        shapes = [ctx.shape(a) for a in ctx.tensor_args]
        return Elementwise(tuple(ctx.out.shape), kind, zero, shapes)

    return make


rule(*ZERO_KEEPING_MODULES, *ZERO_KEEPING_FUNCS, *ZERO_KEEPING_METHODS)(_zero_of("union", None))
rule(*NONZERO_MODULES, *NONZERO_FUNCS, *NONZERO_METHODS)(_zero_of("union", False))


@rule(
    torch.clamp,
    torch.clip,
    torch.clamp_min,
    torch.clamp_max,
    ".clamp",
    ".clamp_",
    ".clamp_min",
    ".clamp_max",
    ".clip",
    ".clip_",
    aten.clamp,
    aten.clamp_,
    aten.clamp_min,
    aten.clamp_max,
    aten.clip,
    nn.Hardtanh,
    F.hardtanh,
    F.hardtanh_,
    aten.hardtanh,
    aten.hardtanh_,
    nn.Threshold,
    F.threshold,
    aten.threshold,
)
def bounded(ctx: Ctx) -> Op:
    """clamp, hardtanh, threshold: they keep zero at zero only if 0 lies within their bounds (``clamp(min=0.1)``
    turns a dead zero into a nonzero constant, which then passes a product)."""
    if ctx.node.op == "call_module":
        m = ctx.module
        lo, hi, value = getattr(m, "min_val", None), getattr(m, "max_val", None), getattr(m, "value", 0)
        th = getattr(m, "threshold", None)
    else:
        name = getattr(ctx.node.target, "__name__", str(ctx.node.target)).lstrip(".").split(".")[0]
        if name.startswith("threshold"):
            th, value, lo, hi = ctx.concrete(ctx.arg(1, "threshold")), ctx.concrete(ctx.arg(2, "value")), None, None
        elif name.startswith("hardtanh"):
            th, value = None, 0
            lo, hi = ctx.concrete(ctx.arg(1, "min_val", -1.0)), ctx.concrete(ctx.arg(2, "max_val", 1.0))
        else:
            th, value = None, 0
            lo = ctx.concrete(ctx.arg(1, "max" if name == "clamp_max" else "min"))
            hi = ctx.concrete(ctx.arg(2, "max")) if name not in ("clamp_min", "clamp_max") else None
            lo, hi = (None, lo) if name == "clamp_max" else (lo, hi)
    keeps = th is None or value == 0 or (isinstance(th, (int, float)) and th < 0)
    for bound, bad in ((lo, lambda b: b > 0), (hi, lambda b: b < 0)):
        if isinstance(bound, torch.fx.Node) or (bound is not None and not isinstance(bound, (int, float))):
            keeps = False  # a tensor bound: not known to hold 0
        elif bound is not None and bad(bound):
            keeps = False
    return Elementwise(tuple(ctx.out.shape), "union", None if keeps else False)  # tensor bounds: read too

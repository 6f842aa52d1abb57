"""Elementwise ops: activations, dropout, casts, add/sub, mul/div (gates), where, clamp, comparisons.

An activation maps each element to itself: a unit is alive after it iff alive before it. The only
difference between activations is whether a dead (zero) input stays zero (``relu``) or becomes a
nonzero constant (``sigmoid``): the latter cannot silence a product, so in ``x * sigmoid(s)`` the
factor ``x`` passes whether or not ``s`` is alive, while ``s`` matters only where ``x`` is alive.
"""
from __future__ import annotations

import operator
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from ..status import Status, combine, union
from .base import Ctx, Op, rule

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

    def __init__(self, shape: tuple, kind: str = "union", zero: bool | None = None,
                 in_shapes: list[tuple] | None = None, nonzero: np.ndarray | None = None):
        self.shape, self.kind, self.zero, self.in_shapes = tuple(shape), kind, zero, in_shapes or []
        self.couples = kind in ("mul", "div")
        self.nonzero = nonzero   # a product with a constant that has zeros: where the product can be nonzero

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
        res = []
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


# activations that keep zero at zero, and shape-preserving ops that copy values
_ZERO_KEEPING_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardswish, nn.Tanh, nn.Tanhshrink, nn.Softsign, nn.Hardshrink, nn.Softshrink,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.FeatureAlphaDropout, nn.Identity,
)
_ZERO_KEEPING_FUNCS = (
    F.relu, F.relu_, F.relu6, F.leaky_relu, F.leaky_relu_, F.prelu, F.rrelu, F.elu, F.elu_, F.celu, F.selu,
    F.gelu, F.silu, F.mish, F.hardswish, F.tanh, F.tanhshrink, F.softsign,
    F.hardshrink, F.softshrink, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
    F.feature_alpha_dropout, torch.relu, torch.relu_, torch.tanh, torch.tanh_, torch.neg, torch.abs, torch.sin, torch.sqrt,
    torch.square, torch.sign, torch.erf, torch.dropout, torch.nn.functional.relu6,
    torch.clone, operator.neg, operator.pos, torch.detach, torch.nan_to_num,
    aten.relu, aten.relu_, aten.relu6, aten.leaky_relu, aten.leaky_relu_, aten.gelu, aten.gelu_, aten.silu,
    aten.silu_, aten.hardswish, aten.hardswish_, aten.tanh, aten.elu, aten.mish,
    aten.dropout, aten.dropout_, aten.native_dropout, aten.feature_dropout, aten.alpha_dropout, aten.neg, aten.abs,
    aten.clone, aten.detach, aten.alias, aten._to_copy, aten.to, aten.type_as, aten.contiguous, aten.lift_fresh_copy,
    aten.sin, aten.sqrt, aten.square, aten.erf, aten.sign, aten.prelu, aten._prelu_kernel, aten.selu, aten.celu,
    aten.nan_to_num, aten.lift_fresh, aten.hardshrink, aten.softshrink,
    aten._assert_tensor_metadata, aten.tanh_, aten.detach_, aten.floor, aten.ceil,
    aten.round, aten.trunc, torch.floor, torch.ceil, torch.round, ".floor", ".ceil", ".round",
    "torchvision.ops.stochastic_depth.stochastic_depth",  # identity in eval, a random row mask in training
)
_ZERO_KEEPING_METHODS = (
    ".relu", ".relu_", ".tanh", ".neg", ".abs", ".sqrt", ".square", ".sign", ".sin", ".clone", ".detach",
    ".contiguous", ".float", ".double", ".half", ".bfloat16", ".long", ".int", ".short", ".bool", ".byte",
    ".to", ".type", ".type_as", ".cpu", ".cuda",
    ".requires_grad_", ".nan_to_num",
)
# ops whose output is a nonzero constant where the input is dead (they cannot silence a product)
_NONZERO_MODULES = (nn.Sigmoid, nn.Hardsigmoid, nn.Softplus, nn.LogSigmoid)
_NONZERO_FUNCS = (
    torch.sigmoid, torch.sigmoid_, torch.exp_, F.sigmoid, F.hardsigmoid, F.softplus, F.logsigmoid, torch.exp, torch.cos, torch.log,
    torch.reciprocal, torch.rsqrt, torch.log1p, torch.expm1, torch.pow, operator.pow, torch.special.expit,
    aten.sigmoid, aten.sigmoid_, aten.hardsigmoid, aten.hardsigmoid_, aten.softplus, aten.exp, aten.cos,
    aten.log, aten.reciprocal, aten.rsqrt, aten.pow, aten.log_sigmoid_forward, aten.expm1, aten.log1p,
    operator.invert, torch.logical_not, aten.logical_not, torch.bitwise_not, aten.bitwise_not,
)
_NONZERO_METHODS = (".sigmoid", ".sigmoid_", ".exp", ".cos", ".log", ".reciprocal", ".rsqrt", ".pow", ".log1p",
                    ".expm1", ".logical_not", ".bitwise_not")

rule(*_ZERO_KEEPING_MODULES, *_ZERO_KEEPING_FUNCS, *_ZERO_KEEPING_METHODS)(_zero_of("union", None))
rule(*_NONZERO_MODULES, *_NONZERO_FUNCS, *_NONZERO_METHODS)(_zero_of("union", False))


@rule(torch.clamp, torch.clip, torch.clamp_min, torch.clamp_max, ".clamp", ".clamp_", ".clamp_min", ".clamp_max",
      ".clip", ".clip_", aten.clamp, aten.clamp_, aten.clamp_min, aten.clamp_max, aten.clip, nn.Hardtanh, F.hardtanh,
      F.hardtanh_, aten.hardtanh, aten.hardtanh_, nn.Threshold, F.threshold, aten.threshold)
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
            keeps = False          # a tensor bound: not known to hold 0
        elif bound is not None and bad(bound):
            keeps = False
    return Elementwise(tuple(ctx.out.shape), "union", None if keeps else False)   # tensor bounds: read too


@rule(operator.add, operator.sub, operator.iadd, operator.isub, torch.add, torch.sub, torch.subtract,
      torch.rsub, torch.where, torch.maximum, torch.minimum, torch.fmax, torch.fmin,
      ".add", ".add_", ".sub", ".sub_", ".rsub", ".where", ".maximum", ".minimum", ".masked_fill", ".masked_fill_",
      torch.masked_fill, torch.lerp, ".lerp",
      aten.add, aten.add_, aten.sub, aten.sub_, aten.rsub, aten.where, aten.maximum, aten.minimum,
      aten.masked_fill, aten.masked_fill_, aten.lerp,
      operator.gt, operator.lt, operator.ge, operator.le, operator.eq, operator.ne, torch.gt, torch.lt, torch.ge,
      torch.le, torch.eq, torch.ne, ".gt", ".lt", ".ge", ".le", ".eq", ".ne", aten.gt, aten.lt, aten.ge, aten.le,
      aten.eq, aten.ne, operator.and_, operator.or_, operator.xor, torch.logical_and, torch.logical_or,
      aten.logical_and, aten.logical_or, aten.bitwise_and, aten.bitwise_or)
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
        return Status.from_full(out, _cdim_of(ins, self.cond.ndim)).with_zero(zero)

    def backward(self, ins: list[Status], out: Status, grad: Status) -> list[Status | None]:
        g = grad.broadcast_to(self.cond.shape).full()
        res: list[Status | None] = [None] * len(ins)
        for i, part in ((self.a, g & self.cond), (self.b, g & ~self.cond)):
            if i is not None:
                st = Status.from_full(part, ins[i].cdim if ins[i].shape else 0).reduce_to(ins[i].shape)
                res[i] = st if res[i] is None else union([res[i], st])
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
    scalar_zero = tuple(bool(ctx.concrete(v) == 0) if not isinstance(ctx.val(v), torch.Tensor) else True
                        for v in (a, b))   # a scalar (or a size read off the input) is zero only if it is 0
    return Where(np.ascontiguousarray(np.broadcast_to(c.numpy(), out)), pos[0], pos[1], scalar_zero)


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


@rule(operator.truediv, operator.itruediv, operator.floordiv, torch.div, torch.true_divide, torch.floor_divide,
      ".div", ".div_", ".true_divide", ".floor_divide", aten.div, aten.div_, aten.floor_divide)
def divide(ctx: Ctx) -> Op:
    node = ctx.node
    first_is_tensor = bool(node.args) and node.args[0] in ctx.tensor_args
    if not first_is_tensor:  # scalar / tensor is a nonzero constant where the tensor is dead
        return Elementwise(tuple(ctx.out.shape), "union", False)
    return Elementwise(tuple(ctx.out.shape), "div" if len(ctx.tensor_args) > 1 else "union")


def _scalar_operands(ctx: Ctx) -> int:
    """How many operands are nonzero Python scalars or constant tensors (they shift dead values)."""
    n = 0
    for a in ctx.node.args[:2]:
        if isinstance(a, (int, float)) and a != 0 and not isinstance(a, bool):
            n += 1
    return n

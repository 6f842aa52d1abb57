"""Ops that mix along some dims and keep the others apart: sort, topk, cumulative sums, Fourier transforms,
GLU, and the bilinear layer.

``sort(x, dim)`` puts any element of a slice along ``dim`` at any place of that slice, and an FFT along
``dim`` makes every output of a slice depend on every input of it; neither moves anything across the
other dims. So an output element depends on the whole slice along ``dims`` at its other coordinates:
an :class:`Along` op, exact up to which place in the slice (that the data decides).

Examples
--------
>>> import torch
>>> from connectome import analyze
>>> class Tokens(torch.nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.a, self.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)
...     def forward(self, x):                    # (1, 5 tokens, 4 features)
...         return self.b(torch.fft.irfft(torch.fft.rfft(self.a(x), dim=1), n=5, dim=1))
>>> m = Tokens()
>>> with torch.no_grad(): m.a.weight[0] = 0
>>> analyze(m, input_shape=(1, 5, 4)).effective_masks["b.weight"][:, 0].any().item()   # feature 0 stays dead
False
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..status import Status, gathered, joined
from .base import Ctx, Op, rule
from .fallback import Fallback

aten = torch.ops.aten

__all__ = ["Along", "Glu", "BilinearLayer"]


class Along(Op):
    """Each output element depends on the input elements of its slice along ``dims`` (same rank)."""

    def __init__(self, in_shape: tuple, out_shape: tuple, dims: tuple[int, ...], n_out: int = 1):
        self.in_shape, self.out_shape, self.dims, self.n_out = in_shape, out_shape, dims, n_out

    def forward(self, ins: list[Status]) -> Any:
        s = ins[0]
        r = s.full().any(axis=self.dims, keepdims=True) if self.dims else s.full()
        out = Status.from_full(
            np.broadcast_to(r, self.out_shape),
            s.cdim if s.cdim not in self.dims else _free(len(self.out_shape), self.dims),
        ).with_zero(s.zero)
        return out if self.n_out == 1 else (out,) * self.n_out

    def backward(self, ins: list[Status], out: Any, grad: Any) -> list[Status | None]:
        g = joined(grad)
        if g is None:
            return [None]
        full = g.full()
        r = full.any(axis=self.dims, keepdims=True) if self.dims else full
        return [Status.from_full(np.broadcast_to(r, self.in_shape), ins[0].cdim)]


def _free(ndim: int, dims: tuple[int, ...]) -> int:
    free = [d for d in range(ndim) if d not in dims]
    return free[-1] if free else 0


def _norm(d: Any, ndim: int, default: tuple[int, ...]) -> tuple[int, ...]:
    if d is None:
        return tuple(x % ndim for x in default) if default else tuple(range(ndim))
    d = (d,) if isinstance(d, int) else tuple(d)
    return tuple(sorted(int(x) % ndim for x in d))


def _along(ctx: Ctx, dim: Any, default: tuple[int, ...]) -> Op:
    x = ctx.tensor_args[0]
    in_shape = ctx.shape(x)
    outs = list(ctx.out) if isinstance(ctx.out, (tuple, list)) else [ctx.out]
    out_shape = tuple(outs[0].shape)
    dims = _norm(ctx.concrete(dim), len(in_shape), default) if in_shape else ()
    if len(out_shape) != len(in_shape):
        return Fallback(ctx.out, [ctx.val(x)], "changes the rank")
    op = Along(in_shape, out_shape, dims, len(outs) if isinstance(ctx.out, (tuple, list)) else 1)
    op.data = [x]
    return op


@rule(
    torch.sort,
    ".sort",
    aten.sort,
    torch.argsort,
    ".argsort",
    aten.argsort,
    torch.topk,
    ".topk",
    aten.topk,
    torch.cumsum,
    ".cumsum",
    aten.cumsum,
    torch.cumprod,
    ".cumprod",
    aten.cumprod,
    torch.cummax,
    ".cummax",
    aten.cummax,
    torch.cummin,
    ".cummin",
    aten.cummin,
    torch.logcumsumexp,
    ".logcumsumexp",
    aten.logcumsumexp,
    torch.msort,
    ".msort",
)
def along_one_dim(ctx: Ctx) -> Op:
    """``sort``, ``topk`` (dim 2 of ``topk(x, k, dim)``), cumulative ops: along one dim (default last; msort: 0)."""
    name = getattr(ctx.node.target, "__name__", str(ctx.node.target)).lstrip(".")
    if name.startswith("msort"):
        return _along(ctx, 0, (0,))
    if name.startswith("topk"):
        return _along(ctx, ctx.arg(2, "dim", -1), (-1,))
    if name.startswith("cum") or name.startswith("logcum"):
        return _along(ctx, ctx.arg(1, "dim"), (-1,))
    return _along(ctx, ctx.arg(1, "dim", -1), (-1,))


_FFT_1D = ("fft", "ifft", "rfft", "irfft", "hfft", "ihfft")
_FFT_2D = ("fft2", "ifft2", "rfft2", "irfft2", "hfft2", "ihfft2")
_FFT_ND = ("fftn", "ifftn", "rfftn", "irfftn", "hfftn", "ihfftn")


@rule(
    *(getattr(torch.fft, n) for n in _FFT_1D + _FFT_2D + _FFT_ND),
    *(getattr(aten, "fft_" + n) for n in _FFT_1D + _FFT_2D + _FFT_ND if hasattr(aten, "fft_" + n)),
    aten._fft_r2c,
    aten._fft_c2r,
    aten._fft_c2c,
)
def fourier(ctx: Ctx) -> Op:
    """Fourier transforms: every output of a slice along the transformed dims depends on all of its inputs."""
    name = getattr(ctx.node.target, "__name__", str(ctx.node.target)).split(".")[0].removeprefix("fft_")
    if name.startswith("_fft"):  # core ATen: (self, dim, ...)
        return _along(ctx, ctx.arg(1, "dim"), ())
    if name in _FFT_1D:
        return _along(ctx, ctx.arg(2, "dim", -1), (-1,))
    if name in _FFT_2D:
        return _along(ctx, ctx.arg(2, "dim", (-2, -1)), (-2, -1))
    return _along(ctx, ctx.arg(2, "dim", None), ())


class Glu(Op):
    """``glu(x, dim) = a * sigmoid(b)`` for the halves ``a, b`` of ``x`` along ``dim``."""

    couples = True

    def __init__(self, in_shape: tuple, dim: int):
        self.in_shape, self.dim = in_shape, dim

    def _halves(self, s: Status) -> tuple[np.ndarray, np.ndarray]:
        a, b = np.split(s.full(), 2, axis=self.dim)
        return a, b

    def forward(self, ins: list[Status]) -> Status:
        s = ins[0]
        a, b = self._halves(s)
        out = a if s.zero else a | b  # sigmoid(b) is never zero: a passes; b matters where a may be nonzero
        return Status.from_full(out, s.cdim).with_zero(s.zero)

    def backward(self, ins: list[Status], out: Status, grad: Status) -> list[Status | None]:
        s = ins[0]
        a, _ = self._halves(s)
        g = grad.full()
        gb = g & a if s.zero else g
        return [Status.from_full(np.concatenate([g, gb], axis=self.dim), s.cdim)]


@rule(F.glu, nn.GLU, aten.glu)
def glu(ctx: Ctx) -> Op:
    x = ctx.tensor_args[0]
    dim: Any = ctx.module.dim if ctx.node.op == "call_module" else ctx.concrete(ctx.arg(1, "dim", -1))
    op = Glu(ctx.shape(x), int(dim) % len(ctx.shape(x)))
    op.data = [x]
    return op


class BilinearLayer(Op):
    """``y[..., o] = sum_ij x1[..., i] W[o, i, j] x2[..., j]``: ``nn.Bilinear`` and ``F.bilinear``."""

    multi = True
    couples = True

    def __init__(self, weight, order: list[int]):
        self.weights = [weight] if weight is not None else []
        self.w = weight.mask.to(torch.float32)
        self.order = order

    def _factors(self, ins: list[Status]) -> tuple:
        x1, x2 = (ins[i] for i in self.order)
        a1, a2 = (torch.from_numpy(np.ascontiguousarray(x.full())).float() for x in (x1, x2))
        m1 = a1 if x1.zero else torch.ones_like(a1)
        m2 = a2 if x2.zero else torch.ones_like(a2)
        return x1, x2, a1, a2, m1, m2

    def forward(self, ins: list[Status]) -> Status:
        x1, x2, a1, a2, m1, m2 = self._factors(ins)
        out = torch.einsum("...i,oij,...j->...o", a1, self.w, m2) + torch.einsum("...i,oij,...j->...o", m1, self.w, a2)
        return Status.from_full((out > 0).numpy(), -1).with_zero(x1.zero or x2.zero)

    def backward(self, ins: list[Status], out: Status, grad: Status) -> list[Status | None]:
        x1, x2, a1, a2, m1, m2 = self._factors(ins)
        g = torch.from_numpy(np.ascontiguousarray(grad.full())).float()
        g1 = torch.einsum("...o,oij,...j->...i", g, self.w, m2) > 0
        g2 = torch.einsum("...o,oij,...i->...j", g, self.w, m1) > 0
        return gathered(len(ins), [(i, Status.from_full(part.numpy(), -1)) for i, part in zip(self.order, (g1, g2))])

    def effective(self, ins: list[Status], grad: Any) -> dict[str, torch.Tensor]:
        done = self.unreached(grad)  # answers for a None grad
        if done is not None:
            return done
        w = self.weights[0]
        x1, x2, a1, a2, m1, m2 = self._factors(ins)
        g = torch.from_numpy(np.ascontiguousarray(grad.full())).float()
        reach = torch.einsum("...o,...i,...j->oij", g, a1, m2) + torch.einsum("...o,...i,...j->oij", g, m1, a2)
        return {w.name: w.mask & (reach > 0)}


@rule(nn.Bilinear)
def bilinear_module(ctx: Ctx) -> Op:
    w = ctx.named_weight(str(ctx.node.target) + ".weight", "linear")
    x1, x2 = ctx.node.args[0], ctx.node.args[1]
    return BilinearLayer(w, [ctx.input_index(x1), ctx.input_index(x2)])


@rule(F.bilinear, torch.bilinear, aten.bilinear)
def bilinear_function(ctx: Ctx) -> Op:
    x1, x2, w_arg = ctx.arg(0, "input1"), ctx.arg(1, "input2"), ctx.arg(2, "weight")
    w = ctx.weight(w_arg, "linear")
    if w is None:
        return Fallback(ctx.out, [ctx.val(a) for a in ctx.tensor_args], "bilinear with a computed weight")
    op = BilinearLayer(w, [0, 1])
    op.data = [x1, x2]
    return op


@rule(aten._trilinear)
def trilinear(ctx: Ctx) -> Op:
    """Core ATen's form of ``F.bilinear``: ``_trilinear(x1, W, x2, [1, 3], [0], [1, 2], [2, 3])``."""
    x1, w_arg, x2 = ctx.arg(0, "i1"), ctx.arg(1, "i2"), ctx.arg(2, "i3")
    layout = [
        list(ctx.concrete(ctx.arg(k, n))) for k, n in ((3, "expand1"), (4, "expand2"), (5, "expand3"), (6, "sumdim"))
    ]
    w = ctx.weight(w_arg, "linear") if layout == [[1, 3], [0], [1, 2], [2, 3]] else None
    if w is None:
        return Fallback(ctx.out, [ctx.val(a) for a in ctx.tensor_args], "trilinear product other than bilinear")
    op = BilinearLayer(w, [0, 1])
    op.data = [x1, x2]
    return op

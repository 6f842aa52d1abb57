"""Channel-wise position maps and reductions: pooling, adaptive pooling, upsampling, mean/sum over dims.

None of these mixes channels; each moves or merges positions inside a channel the same way for every
channel, so the walk transforms only the few distinct position patterns (never the channels).
Max pooling is treated like sum pooling: any element of the window can be the one that passes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..spatial import DimMap, adaptive_map, interp_map, window_taps
from ..status import Status
from .base import Ctx, Op, rule

aten = torch.ops.aten

__all__ = ["Positional", "Reduce"]


class Positional(Op):
    """Output position reads the input positions of a list of taps (OR), in every channel alike."""

    def __init__(
        self, in_shape: tuple, out_shape: tuple, cdim: int, taps: Sequence[Sequence[DimMap | None]], n_out: int = 1
    ):
        self.in_shape, self.out_shape, self.cdim, self.taps, self.n_out = in_shape, out_shape, cdim, taps, n_out
        self.out_cdim = cdim

    def forward(self, ins: list[Status]) -> Any:
        s = ins[0].with_cdim(self.cdim)
        pos = self.out_shape[: self.cdim] + self.out_shape[self.cdim + 1 :]
        out = s.map_positions(self.taps, pos)
        return out if self.n_out == 1 else (out,) * self.n_out

    def backward(self, ins: list[Status], out: Any, grad: Any) -> list[Status | None]:
        gs = [grad] if self.n_out == 1 else [g for g in grad if g is not None]
        if not gs:
            return [None]
        from ..status import union

        g = union(gs).with_cdim(self.cdim)
        pos = self.in_shape[: self.cdim] + self.in_shape[self.cdim + 1 :]
        return [g.map_positions(self.taps, pos, transpose=True)]


def _ints(v: Any, n: int) -> tuple[Any, ...]:  # ints, or Nones for None
    if v is None:
        return (None,) * n
    return tuple(v) if isinstance(v, (list, tuple)) else (int(v),) * n


def _window(ctx: Ctx, n: int, kernel: Any, stride: Any, padding: Any, dilation: Any = 1) -> Positional:
    x = ctx.tensor_args[0]
    in_shape = ctx.shape(x)
    out = ctx.out
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    out_shape = tuple(outs[0].shape)
    k = _ints(kernel, n)
    s = _ints(stride if stride not in (None, [], ()) else kernel, n)
    p, d = _ints(padding, n), _ints(dilation, n)
    cdim = len(in_shape) - n - 1
    per_dim = [window_taps(in_shape[cdim + 1 + i], out_shape[cdim + 1 + i], k[i], s[i], p[i], d[i]) for i in range(n)]
    taps = [(None,) * cdim + t for t in itertools.product(*per_dim)]
    return Positional(in_shape, out_shape, cdim, taps, len(outs) if isinstance(out, (tuple, list)) else 1)


_MAX: dict[type[nn.Module], int] = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}
_AVG: dict[type[nn.Module], int] = {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3, nn.LPPool1d: 1, nn.LPPool2d: 2}


@rule(*_MAX, *_AVG)
def pool_module(ctx: Ctx) -> Op:
    m = ctx.module
    n = next(v for c, v in {**_MAX, **_AVG}.items() if isinstance(m, c))
    return _window(ctx, n, m.kernel_size, m.stride, getattr(m, "padding", 0), getattr(m, "dilation", 1))


@rule(
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.max_pool1d_with_indices,
    F.max_pool2d_with_indices,
    F.max_pool3d_with_indices,
    torch.max_pool1d,
    torch.max_pool2d,
    torch.max_pool3d,
    aten.max_pool1d,
    aten.max_pool2d,
    aten.max_pool3d,
    aten.max_pool2d_with_indices,
    aten.max_pool3d_with_indices,
)
def max_pool_function(ctx: Ctx) -> Op:
    n = len(ctx.shape(ctx.tensor_args[0])) - 2
    return _window(
        ctx, n, ctx.arg(1, "kernel_size"), ctx.arg(2, "stride"), ctx.arg(3, "padding", 0), ctx.arg(4, "dilation", 1)
    )


@rule(F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, torch.avg_pool1d, aten.avg_pool1d, aten.avg_pool2d, aten.avg_pool3d)
def avg_pool_function(ctx: Ctx) -> Op:
    n = len(ctx.shape(ctx.tensor_args[0])) - 2
    return _window(ctx, n, ctx.arg(1, "kernel_size"), ctx.arg(2, "stride"), ctx.arg(3, "padding", 0))


def _resample(ctx: Ctx, n: int, make) -> Positional:
    x = ctx.tensor_args[0]
    in_shape = ctx.shape(x)
    out = ctx.out
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    out_shape = tuple(outs[0].shape)
    cdim = len(in_shape) - n - 1
    maps = tuple(make(i, in_shape[cdim + 1 + i], out_shape[cdim + 1 + i]) for i in range(n))
    return Positional(
        in_shape, out_shape, cdim, [(None,) * cdim + maps], len(outs) if isinstance(out, (tuple, list)) else 1
    )


_ADAPTIVE = {
    nn.AdaptiveAvgPool1d: 1,
    nn.AdaptiveAvgPool2d: 2,
    nn.AdaptiveAvgPool3d: 3,
    nn.AdaptiveMaxPool1d: 1,
    nn.AdaptiveMaxPool2d: 2,
    nn.AdaptiveMaxPool3d: 3,
}


@rule(
    *_ADAPTIVE,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.adaptive_max_pool3d,
    F.adaptive_max_pool1d_with_indices,
    F.adaptive_max_pool2d_with_indices,
    F.adaptive_max_pool3d_with_indices,
    torch.adaptive_avg_pool1d,
    torch.adaptive_max_pool1d,
    aten.adaptive_avg_pool1d,
    aten.adaptive_avg_pool2d,
    aten.adaptive_avg_pool3d,
    aten._adaptive_avg_pool2d,
    aten._adaptive_avg_pool3d,
    aten.adaptive_max_pool1d,
    aten.adaptive_max_pool2d,
    aten.adaptive_max_pool3d,
)
def adaptive_pool(ctx: Ctx) -> Op:
    if ctx.node.op == "call_module":
        n = next(v for c, v in _ADAPTIVE.items() if isinstance(ctx.module, c))
    else:
        out = ctx.out[0] if isinstance(ctx.out, (tuple, list)) else ctx.out
        osz = ctx.arg(1, "output_size")
        n = len(osz) if isinstance(osz, (list, tuple)) else len(out.shape) - 2
    return _resample(ctx, n, lambda i, a, b: adaptive_map(a, b))


@rule(nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
def upsample_module(ctx: Ctx) -> Op:
    m: Any = ctx.module
    n = len(ctx.shape(ctx.tensor_args[0])) - 2
    mode = m.mode
    ac = m.align_corners if mode not in ("nearest", "nearest-exact", "area") else None
    return _interp(ctx, n, mode, ac, m.scale_factor)


@rule(F.interpolate, F.upsample, F.upsample_nearest, F.upsample_bilinear)
def interpolate_function(ctx: Ctx) -> Op:
    n = len(ctx.shape(ctx.tensor_args[0])) - 2
    target: Any = ctx.node.target
    mode = {F.upsample_nearest: "nearest", F.upsample_bilinear: "bilinear"}.get(target) or ctx.arg(3, "mode", "nearest")
    ac = True if target is F.upsample_bilinear else ctx.arg(4, "align_corners", None)
    scale = (
        ctx.arg(2, "scale_factor", None)
        if target not in (F.upsample_nearest, F.upsample_bilinear)
        else ctx.arg(2, "scale_factor", None)
    )
    return _interp(ctx, n, mode, ac, scale)


def _interp(ctx: Ctx, n: int, mode: str, ac: Any, scale: Any) -> Positional:
    scales = _ints(scale, n) if not isinstance(scale, float) else (scale,) * n
    if isinstance(scale, (list, tuple)):
        scales = tuple(float(v) for v in scale)
    ac = None if mode in ("nearest", "nearest-exact", "area") else bool(ac)
    return _resample(
        ctx, n, lambda i, a, b: interp_map(a, b, mode, ac, None if scales[i] is None else float(scales[i]))
    )


@rule(
    aten.upsample_nearest1d,
    aten.upsample_nearest2d,
    aten.upsample_nearest3d,
    aten._upsample_nearest_exact1d,
    aten._upsample_nearest_exact2d,
    aten._upsample_nearest_exact3d,
    aten.upsample_bilinear2d,
    aten.upsample_linear1d,
    aten.upsample_trilinear3d,
    aten.upsample_bicubic2d,
)
def upsample_aten(ctx: Ctx) -> Op:
    target: Any = ctx.node.target
    name = target.overloadpacket.__name__
    n = len(ctx.shape(ctx.tensor_args[0])) - 2
    mode = {
        "upsample_nearest": "nearest",
        "_upsample_nearest_exact": "nearest-exact",
        "upsample_bilinear": "bilinear",
        "upsample_linear": "linear",
        "upsample_trilinear": "trilinear",
        "upsample_bicubic": "bicubic",
    }[name[:-2]]
    nearest = "nearest" in mode
    ac = None if nearest else ctx.arg(2, "align_corners")
    scale = ctx.arg(2 if nearest else 3, "scale_factors" if target._overloadname == "vec" else "scales")
    if isinstance(scale, (list, tuple)) and len(scale) == n:
        scales: tuple[float | None, ...] = tuple(float(v) for v in scale)
    else:
        scales = (None,) * n
    return _resample(ctx, n, lambda i, a, b: interp_map(a, b, mode, ac, scales[i]))


class Reduce(Op):
    """Reduction over ``dims`` (mean, sum, max...): an output element depends on its whole slice."""

    def __init__(
        self,
        in_shape: tuple,
        out_shape: tuple,
        dims: tuple[int, ...],
        keepdim: bool,
        n_out: int = 1,
        zero: bool | None = None,
    ):
        self.in_shape, self.out_shape, self.dims, self.keepdim = in_shape, out_shape, dims, keepdim
        self.n_out, self.zero = n_out, zero

    def forward(self, ins: list[Status]) -> Any:
        s = ins[0]
        full = s.full()
        r = full.any(axis=self.dims, keepdims=True) if self.dims else full
        r = r.reshape(self.out_shape)
        cd = s.cdim if s.cdim not in self.dims and self.keepdim else _cdim(self.out_shape)
        out = Status.from_full(r, cd).with_zero(s.zero if self.zero is None else self.zero)
        return out if self.n_out == 1 else (out,) * self.n_out

    def backward(self, ins: list[Status], out: Any, grad: Any) -> list[Status | None]:
        gs = [grad] if self.n_out == 1 else [g for g in grad if g is not None]
        if not gs:
            return [None]
        from ..status import union

        g = union(gs).full()
        kept = [1 if d in self.dims else n for d, n in enumerate(self.in_shape)]
        g = np.broadcast_to(g.reshape(kept), self.in_shape)
        return [Status.from_full(g, ins[0].cdim)]


def _cdim(shape: tuple) -> int:
    return 1 if len(shape) > 1 else 0


def _dims(d: Any, ndim: int) -> tuple[int, ...]:
    if d is None or d == [] or d == ():
        return tuple(range(ndim))
    if isinstance(d, int):
        d = (d,)
    return tuple(sorted(int(x) % ndim for x in d)) if ndim else ()


@rule(
    torch.mean,
    torch.sum,
    torch.amax,
    torch.amin,
    torch.prod,
    torch.std,
    torch.var,
    torch.logsumexp,
    torch.norm,
    torch.any,
    torch.all,
    torch.nansum,
    torch.nanmean,
    torch.max,
    torch.min,
    torch.median,
    torch.argmax,
    torch.argmin,
    torch.count_nonzero,
    torch.std_mean,
    torch.var_mean,
    ".mean",
    ".sum",
    ".amax",
    ".amin",
    ".prod",
    ".std",
    ".var",
    ".logsumexp",
    ".norm",
    ".any",
    ".all",
    ".max",
    ".min",
    ".median",
    ".argmax",
    ".argmin",
    ".nansum",
    ".nanmean",
    aten.mean,
    aten.sum,
    aten.amax,
    aten.amin,
    aten.prod,
    aten.std,
    aten.var,
    aten.logsumexp,
    aten.norm,
    aten.linalg_vector_norm,
    aten.any,
    aten.all,
    aten.max,
    aten.min,
    aten.argmax,
    aten.argmin,
    aten.var_mean,
    aten.std_mean,
    aten.median,
    aten.nansum,
)
def reduction(ctx: Ctx) -> Op:
    x = ctx.tensor_args[0]
    in_shape = ctx.shape(x)
    out = ctx.out
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    if len(ctx.tensor_args) > 1:  # torch.max(a, b) is elementwise
        from .elementwise import Elementwise

        return Elementwise(tuple(outs[0].shape), "union")
    norm = ctx.node.target is torch.norm or ctx.node.target == ".norm"
    dim = ctx.arg(2 if norm else 1, "dim", None)
    if isinstance(dim, (bool, float, str)) or (dim is not None and not isinstance(dim, (int, list, tuple))):
        dim = None
    keepdim = ctx.arg(3 if norm else 2, "keepdim", False)
    keepdim = keepdim if isinstance(keepdim, bool) else False
    dims = _dims(dim, len(in_shape))
    out_shape = tuple(outs[0].shape)
    return Reduce(in_shape, out_shape, dims, keepdim, len(outs) if isinstance(out, (tuple, list)) else 1)

"""Convolutions: ``nn.Conv1d/2d/3d``, ``nn.ConvTranspose1d/2d/3d``, their functional and ATen forms.

Each kernel tap is a position map (:func:`connectome.graph.spatial.conv_taps`): a tap that, at the traced
input size, only ever reads padding maps nothing, so it is never effective.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..spatial import DimMap, conv_taps, transposed_taps
from .base import Ctx, Weight, rule
from .mixing import Mixing

aten = torch.ops.aten


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (list, tuple)) else (int(v),) * n


def make_conv(
    ctx: Ctx,
    x: Any,
    weight: Weight | None,
    wshape: Sequence[int],
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: int,
    mode: str = "zeros",
    transposed: bool = False,
) -> Mixing:
    """A :class:`Mixing` for a convolution of node ``x`` with a weight of shape ``wshape``."""
    in_shape, out_shape = ctx.shape(x), tuple(ctx.out.shape)
    k = tuple(wshape[2:])
    n = len(k)
    stride, dilation = _tuple(stride, n), _tuple(dilation, n)
    if isinstance(padding, str):
        padding = tuple(0 if padding == "valid" else d * (kk - 1) // 2 for d, kk in zip(dilation, k))
    padding = _tuple(padding, n)
    cdim = len(in_shape) - n - 1
    per_dim: list[tuple[DimMap | None, ...]] = []
    for d in range(n):
        a, b = in_shape[cdim + 1 + d], out_shape[cdim + 1 + d]
        if k[d] == 1 and stride[d] == 1 and padding[d] == 0 and a == b:
            per_dim.append((None,))  # position y reads y: the identity, as for a linear layer
        elif transposed:
            per_dim.append(transposed_taps(a, b, k[d], stride[d], padding[d], dilation[d]))
        else:
            per_dim.append(conv_taps(a, b, k[d], stride[d], padding[d], dilation[d], mode))
    taps = [(None,) * cdim + t for t in itertools.product(*per_dim)]
    T = len(taps)
    mask = weight.mask if weight is not None else torch.ones(tuple(wshape), dtype=torch.bool)
    if not transposed:
        conn = mask.reshape(mask.shape[0], mask.shape[1], T)
        op = Mixing(weight, conn, groups, in_shape, out_shape, cdim, taps)
        op.data = [x]
        return op
    i_ch, og = mask.shape[0], mask.shape[1]
    ig = i_ch // groups
    conn = mask.reshape(groups, ig, og, T).permute(0, 2, 1, 3).reshape(groups * og, ig, T)

    def to_param(eff: torch.Tensor) -> torch.Tensor:
        return eff.reshape(groups, og, ig, T).permute(0, 2, 1, 3).reshape(tuple(wshape))

    op = Mixing(weight, conn, groups, in_shape, out_shape, cdim, taps, to_param)
    op.data = [x]
    return op


_KIND = {
    nn.Conv1d: "conv1d",
    nn.Conv2d: "conv2d",
    nn.Conv3d: "conv3d",
    nn.ConvTranspose1d: "convT1d",
    nn.ConvTranspose2d: "convT2d",
    nn.ConvTranspose3d: "convT3d",
}


@rule(nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def conv_module(ctx: Ctx) -> Mixing:
    m: Any = ctx.module
    kind = next(v for c, v in _KIND.items() if isinstance(m, c))
    name = str(ctx.node.target) + ".weight"
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    return make_conv(
        ctx,
        ctx.node.args[0],
        ctx.named_weight(name, kind),
        m.weight.shape,
        m.stride,
        m.padding,
        m.dilation,
        m.groups,
        m.padding_mode,
        transposed,
    )


@rule(F.conv1d, F.conv2d, F.conv3d, aten.conv1d, aten.conv2d, aten.conv3d)
def conv_function(ctx: Ctx) -> Mixing:
    w = ctx.arg(1, "weight")
    wshape = ctx.shape(w)
    n = len(wshape) - 2
    return make_conv(
        ctx,
        ctx.arg(0, "input"),
        ctx.weight(w, f"conv{n}d"),
        wshape,
        ctx.arg(3, "stride", 1),
        ctx.arg(4, "padding", 0),
        ctx.arg(5, "dilation", 1),
        ctx.arg(6, "groups", 1),
    )


@rule(
    F.conv_transpose1d,
    F.conv_transpose2d,
    F.conv_transpose3d,
    aten.conv_transpose1d,
    aten.conv_transpose2d,
    aten.conv_transpose3d,
)
def conv_transpose_function(ctx: Ctx) -> Mixing:
    w = ctx.arg(1, "weight")
    wshape = ctx.shape(w)
    n = len(wshape) - 2
    return make_conv(
        ctx,
        ctx.arg(0, "input"),
        ctx.weight(w, f"convT{n}d"),
        wshape,
        ctx.arg(3, "stride", 1),
        ctx.arg(4, "padding", 0),
        ctx.arg(7, "dilation", 1),
        ctx.arg(6, "groups", 1),
        transposed=True,
    )


@rule(aten.convolution, aten._convolution)
def convolution(ctx: Ctx) -> Mixing:
    w = ctx.arg(1, "weight")
    wshape = ctx.shape(w)
    transposed = bool(ctx.arg(6, "transposed"))
    kind = ("convT" if transposed else "conv") + f"{len(wshape) - 2}d"
    return make_conv(
        ctx,
        ctx.arg(0, "input"),
        ctx.weight(w, kind),
        wshape,
        ctx.arg(3, "stride"),
        ctx.arg(4, "padding"),
        ctx.arg(5, "dilation"),
        ctx.arg(8, "groups"),
        transposed=transposed,
    )

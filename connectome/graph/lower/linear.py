"""Linear layers: ``nn.Linear``, ``F.linear`` and the ATen forms (``linear``, ``addmm``, ``mm`` with a weight)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Ctx, Op, rule, transposed_weight
from .bilinear import linear_with_computed_weight, plus_term, product
from .mixing import Mixing

aten = torch.ops.aten


@rule(nn.Linear)
def linear_module(ctx: Ctx) -> Mixing:
    weight = ctx.named_weight(str(ctx.node.target) + ".weight", "linear")
    return Mixing.linear(weight, weight.mask, ctx.shape(ctx.node.args[0]), tuple(ctx.out.shape))


@rule(F.linear, aten.linear)
def linear_function(ctx: Ctx) -> Op:
    x, w = ctx.arg(0, "input"), ctx.arg(1, "weight")
    weight = ctx.weight(w, "linear")
    if weight is None:
        return linear_with_computed_weight(ctx)
    op = Mixing.linear(weight, weight.mask, ctx.shape(x), tuple(ctx.out.shape))
    op.data = [x]
    return op


@rule(aten.addmm, torch.addmm, ".addmm")
def addmm(ctx: Ctx):
    """``addmm(bias, x, W.t())``: core ATen's linear layer; with another matrix it is a product plus a term."""
    x, mat2 = ctx.arg(1, "mat1"), ctx.arg(2, "mat2")
    weight = transposed_weight(ctx, mat2)
    if weight is None:
        return plus_term(ctx, product(ctx, torch.mm, x, mat2), ctx.arg(0, "input"))
    op = Mixing.linear(weight, weight.mask, ctx.shape(x), tuple(ctx.out.shape))
    op.data = [x]
    return plus_term(ctx, op, ctx.arg(0, "input"))

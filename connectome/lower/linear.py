"""Linear layers: ``nn.Linear``, ``F.linear`` and the ATen forms (``linear``, ``addmm``, ``mm`` with a weight)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Ctx, rule
from .mixing import Mixing

aten = torch.ops.aten


@rule(nn.Linear)
def linear_module(ctx: Ctx) -> Mixing:
    weight = ctx.named_weight(ctx.node.target + ".weight", "linear")
    return Mixing.linear(weight, weight.mask, ctx.shape(ctx.node.args[0]), tuple(ctx.out.shape))


@rule(F.linear, aten.linear)
def linear_function(ctx: Ctx) -> Mixing:
    x, w = ctx.arg(0, "input"), ctx.arg(1, "weight")
    weight = ctx.weight(w, "linear")
    if weight is None:
        from .bilinear import linear_with_computed_weight
        return linear_with_computed_weight(ctx)
    op = Mixing.linear(weight, weight.mask, ctx.shape(x), tuple(ctx.out.shape))
    op.data = [x]
    return op

"""LAMP (Lee et al., 2021): a weight's square over the sum of the squares of the weights at least as large
in its layer, so one global threshold adapts to each layer."""

import torch

from . import Context, score


@score("lamp")
def lamp(ctx: Context):
    out = {}
    for name, w in ctx.weights.items():
        sq = (w.detach().double() * ctx.masks[name]).flatten() ** 2
        order = torch.argsort(sq, stable=True)  # ascending
        tail = torch.flip(torch.cumsum(torch.flip(sq[order], [0]), 0), [0])  # sum over v >= u
        s = torch.empty_like(sq)
        s[order] = torch.where(tail > 0, sq[order] / tail.clamp_min(1e-300), torch.zeros_like(tail))
        out[name] = s.view(w.shape)
    return out

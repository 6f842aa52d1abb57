"""Random: a seeded uniform draw per weight; with a quota, random pruning under layer quotas."""

import torch

from . import Context, score


@score("random")
def random(ctx: Context):
    return {name: torch.rand(w.shape, generator=ctx.generator) for name, w in ctx.weights.items()}

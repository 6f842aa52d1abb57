"""Magnitude: keep the largest weights, ``|w|``."""

from . import Context, score


@score("magnitude")
def magnitude(ctx: Context):
    return {name: w.detach().abs() for name, w in ctx.weights.items()}

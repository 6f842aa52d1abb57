"""SNIP (Lee et al., 2019): connection sensitivity ``|g * w|``, ``g`` the loss gradient on a batch of data."""

import torch
from torch.func import functional_call

from ..quotas import PruneError
from . import Context, apply_masks, masked_params, score


@score("snip", needs_data=True)
def snip(ctx: Context):
    if ctx.batch is None:
        raise PruneError("snip scores weights on data: give a batch (inputs, class targets)")
    x, y = ctx.batch
    params = masked_params(ctx)
    loss = torch.nn.functional.cross_entropy(functional_call(ctx.model, apply_masks(params, ctx), (x,)), y)
    names = list(ctx.weights)
    grads = torch.autograd.grad(loss, [params[n] for n in names])
    return {n: (g * params[n].detach()).abs() for n, g in zip(names, grads)}

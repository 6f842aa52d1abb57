"""GraSP (Wang et al., 2020): keep the weights whose removal would most reduce gradient flow.

The paper removes the largest ``-w * Hg`` (``H`` the Hessian, ``g`` the gradient of the loss on a batch,
logits divided by a temperature of 200); kept first here is therefore the largest ``w * Hg``.
"""

import torch
from torch.func import functional_call

from ..quotas import PruneError
from . import Context, apply_masks, masked_params, score

TEMPERATURE = 200.0


@score("grasp", needs_data=True)
def grasp(ctx: Context):
    if ctx.batch is None:
        raise PruneError("grasp scores weights on data: give a batch (inputs, class targets)")
    x, y = ctx.batch
    names = list(ctx.weights)
    params = masked_params(ctx)
    leaves = [params[n] for n in names]

    def loss():
        out = functional_call(ctx.model, apply_masks(params, ctx), (x,)) / TEMPERATURE
        return torch.nn.functional.cross_entropy(out, y)

    g = [t.detach() for t in torch.autograd.grad(loss(), leaves)]
    g2 = torch.autograd.grad(loss(), leaves, create_graph=True)
    z = sum((a * b).sum() for a, b in zip(g2, g))
    assert isinstance(z, torch.Tensor)  # a sum over one weight or more (prune refuses a model without)
    hg = torch.autograd.grad(z, leaves)
    return {n: params[n].detach() * h for n, h in zip(names, hg)}

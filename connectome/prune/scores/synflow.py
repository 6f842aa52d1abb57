"""SynFlow (Tanaka et al., 2020): data-free, iterative. Each round scores ``|w * dR/dw|`` with ``R`` the
sum of the outputs of the linearised network (every parameter and buffer replaced by its absolute value,
float64, input all ones), then prunes to density ``d^(k/rounds)``; the last round's scores are returned.

Linearised: with positive weights and inputs, ReLU (and ELU, SELU, leaky ReLU) pass the flow as it is,
and they run unchanged, as in the authors' code. Activations that clip or bend positive values (ReLU6,
hardtanh, sigmoid, tanh, GELU, SiLU, Mish, hardswish, hardsigmoid, softplus) act as the identity: left
in, ReLU6 alone stops every gradient behind it, and MobileNetV2 keeps its first layers whole and empties
the rest. Normalisations (LayerNorm, softmax) stay as they are.

The gradient comes from autograd, not from a flow over connectome's unit graph: a unit there (a conv
channel) lumps spatial positions whose flows differ near the borders, and normalisation layers rescale
the flow per channel, so the unit graph gives ``R`` exactly only for networks without convolutions or
norms, where autograd takes milliseconds anyway.

Example: ``prune(model, "synflow", 0.99, input_shape=(1, 3, 32, 32))`` (see ``connectome.prune``)."""

import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from . import Context, apply_masks, masked_params, score

_BENDING = {
    F.relu6,
    F.hardtanh,
    F.hardtanh_,
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    F.hardsigmoid,
    F.sigmoid,
    F.tanh,
    F.softplus,
    torch.sigmoid,
    torch.sigmoid_,
    torch.tanh,
    torch.tanh_,
    torch.Tensor.sigmoid,
    torch.Tensor.sigmoid_,
    torch.Tensor.tanh,
    torch.Tensor.tanh_,
}


class _Linear(TorchFunctionMode):
    """Activations that clip or bend positive values pass their input through."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _BENDING:
            return args[0]
        return func(*args, **(kwargs or {}))


def synflow_scores(ctx: Context) -> dict[str, torch.Tensor]:
    """One round: ``|w * dR/dw|`` for the current masks."""
    was_training = ctx.model.training
    ctx.model.eval()
    try:
        params = masked_params(ctx, transform=torch.abs, dtype=torch.float64)
        ones = torch.ones(ctx.input_shape, dtype=torch.float64)
        with _Linear():
            out = functional_call(ctx.model, apply_masks(params, ctx), (ones,))
        r = out.sum()
        names = list(ctx.weights)
        grads = torch.autograd.grad(r, [params[n] for n in names])
    finally:
        ctx.model.train(was_training)
    return {n: (g * params[n].detach()).abs() for n, g in zip(names, grads)}


@score("synflow", iterative=True)
def synflow(ctx: Context):
    density = 1.0 - ctx.sparsity
    for k in range(1, ctx.rounds + 1):
        scores = synflow_scores(ctx)
        ctx.masks = ctx.select(scores, 1.0 - density ** (k / ctx.rounds))
        ctx.log(f"synflow round {k}/{ctx.rounds}")
    return synflow_scores(ctx)

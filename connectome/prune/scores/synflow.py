"""SynFlow (Tanaka et al., 2020): data-free, iterative. Each round scores ``|w * dR/dw|`` with ``R`` the
sum of the outputs of the linearised network (every parameter and buffer replaced by its absolute value,
float64, input all ones), then prunes to density ``d^(k/rounds)``. The scores returned rank the last
round's masks first and the pruned weights after them by the flow each would carry (:func:`final_scores`),
so that effective targeting, which keeps more weights than the rounds did, restores useful ones.

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

import numpy as np
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


def _flows(ctx: Context) -> tuple[list[str], dict[str, torch.Tensor], list[torch.Tensor]]:
    """The weights' names, |w| (float64), and dR/d(w * mask) at the current masks."""
    was_training = ctx.model.training
    ctx.model.eval()
    try:
        params = masked_params(ctx, transform=torch.abs, dtype=torch.float64)
        ones = torch.ones(ctx.input_shape, dtype=torch.float64)
        masked = apply_masks(params, ctx)
        with _Linear():
            out = functional_call(ctx.model, masked, (ones,))
        names = list(ctx.weights)
        grads = torch.autograd.grad(out.sum(), [masked[n] for n in names])
    finally:
        ctx.model.train(was_training)
    return names, {n: params[n].detach() for n in names}, list(grads)


def synflow_scores(ctx: Context) -> dict[str, torch.Tensor]:
    """One round: ``|w * dR/dw|`` for the current masks."""
    names, w, grads = _flows(ctx)
    return {n: (g * w[n] * ctx.masks[n]).abs() for n, g in zip(names, grads)}


def final_scores(ctx: Context) -> dict[str, torch.Tensor]:
    """The scores that the final selection reads, as ranks: the last round's kept weights by their flow,
    then the pruned weights by the flow each would carry if it were restored (``|w| dR/d(w * mask)``,
    which is nonzero only between units that carry flow), then the pruned weights that could carry
    none (score 0).

    Selecting at the last round's sparsity gives back its masks exactly; keeping more (effective
    targeting) restores first the weights that join live units, not an arbitrary zero-score tie.
    """
    names, w, grads = _flows(ctx)
    kept = torch.cat([ctx.masks[n].flatten() for n in names]).numpy()
    flow = torch.cat([(g * w[n]).abs().flatten() for n, g in zip(names, grads)]).numpy()
    if not (flow > 0).any():
        return {n: torch.zeros_like(w[n]) for n in names}  # no flow at all: nothing to rank
    order = np.lexsort((-flow, ~kept))  # kept first, then by flow; stable, so ties keep index order
    rank = np.empty(len(flow), dtype=np.float64)
    rank[order] = np.arange(len(flow), 0, -1, dtype=np.float64)
    rank[~kept & (flow == 0)] = 0.0
    out, at = {}, 0
    for n in names:
        k = w[n].numel()
        out[n] = torch.from_numpy(rank[at : at + k].copy()).view(w[n].shape)
        at += k
    return out


@score("synflow", iterative=True)
def synflow(ctx: Context):
    density = 1.0 - ctx.sparsity
    for k in range(1, ctx.rounds + 1):
        scores = synflow_scores(ctx)
        ctx.masks = ctx.select(scores, 1.0 - density ** (k / ctx.rounds))
        ctx.log(f"synflow round {k}/{ctx.rounds}")
    return final_scores(ctx)

"""CoreNet's baselines under the same budget of kept parameters:

- ``uniform``: the same estimator and the same exact budget, with every weight of a sign set equally
  likely (the sensitivities replaced by 1): what importance sampling adds over plain sampling;
- ``magnitude``: each layer keeps the largest ``|w|`` at the same density, no reweighting;
- ``svd``: each layer (a convolution as outputs x kernel entries) replaced by its best rank-k
  approximation, with ``k`` as large as ``k (rows + columns) <= keep * rows * columns`` allows. The
  result is dense: its parameter count is that of the two factors.

Example: ``baseline("magnitude", model, x, keep=0.15)`` (see :func:`baseline`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..quotas import PruneError, kept_counts, uniform
from ..select import top_k
from .layers import gather, rows_of
from .run import Sparsified, corenet

__all__ = ["BASELINES", "baseline"]

BASELINES = ("uniform", "magnitude", "svd")


def baseline(method: str, model: nn.Module, sample: torch.Tensor, keep: float, seed: int = 0) -> Sparsified:
    """The baseline ``method`` at ``keep`` of the parameters of the layers CoreNet would sample.

    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    >>> [baseline(m, net, torch.randn(32, 20), 0.2).kept for m in BASELINES]
    [150, 150, 100]
    """
    if method not in BASELINES:
        raise PruneError(f"unknown baseline {method!r}: choose {', '.join(BASELINES)}")
    if not 0 < keep <= 1:
        raise PruneError(f"--keep must lie in (0, 1], not {keep}")
    if method == "uniform":
        return corenet(model, sample, keep, seed=seed, uniform=True)
    layers = gather(model, sample, deltas=False)
    shapes = [tuple(lay.module.weight.shape) for lay in layers]
    total = sum(lay.module.weight.numel() for lay in layers)
    weights, masks, kept = {}, {}, 0
    if method == "magnitude":
        for lay, k in zip(layers, kept_counts(shapes, uniform(shapes, 1 - keep))):
            w = lay.module.weight.detach()
            masks[lay.name] = top_k(w.abs(), k)
            weights[lay.name] = w * masks[lay.name]
            kept += k
    else:
        for lay in layers:
            w = rows_of(lay.module)
            rank = int(keep * w.numel() // sum(w.shape))
            u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
            approx = (u[:, :rank] * s[:rank]) @ vh[:rank]
            weights[lay.name] = approx.to(w.dtype).reshape(lay.module.weight.shape)
            masks[lay.name] = torch.ones(lay.module.weight.shape, dtype=torch.bool)
            kept += rank * sum(w.shape)
    return Sparsified(weights, masks, int(keep * total), kept, layers)

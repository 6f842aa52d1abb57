"""DyReLU-B (Chen et al., "Dynamic ReLU", 2020), as EAST uses it: a per-channel piecewise-linear
activation ``y_c = max_k (a_kc(x) x_c + b_kc(x))`` with ``k = 2``, whose coefficients a small
hyper-network computes from the whole input: global average pool, linear ``C -> C/4``, ReLU, linear
``-> 2kC``, ``theta = 2 sigmoid(.) - 1``, and ``coefficients = theta * lambda + init`` with
``lambda = (1, 1, 0.5, 0.5)`` and ``init = (1, 0, 0, 0)`` for ``(a_1, a_2, b_1, b_2)``.

**Phasing.** ``coefficients = beta * coefficients + (1 - beta) * init``, with ``beta`` lowered from 1 to 0
during training (:func:`.schedules.phase_beta`). At ``beta = 0`` the coefficients are exactly ``init``,
so ``y = max(x, 0)``: an exact ReLU, which :func:`phase_out` puts in its place.

The hyper-network's weights are dense and are not counted in the sparsity: ``keeps_dense`` keeps them
out of the model's prunable weights (:func:`connectome.io.masks.prunable_weights`), and the training
output says so. The analysis still follows the signal through them.

Example: ``DyReLU(16)(torch.randn(2, 16, 8, 8))`` (see :class:`DyReLU`).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DyReLU", "phase", "phase_out"]


class DyReLU(nn.Module):
    """DyReLU-B over the channels (dimension 1) of a batch of any rank >= 2.

    >>> torch.manual_seed(0) and None
    >>> act = DyReLU(8)
    >>> x = torch.randn(2, 8, 4, 4)
    >>> _ = act.beta.fill_(0.0)
    >>> torch.equal(act(x), torch.relu(x))
    True
    """

    keeps_dense = True  # the hyper-network is not pruned, nor counted in the sparsity
    lambdas: torch.Tensor
    init: torch.Tensor
    beta: torch.Tensor  # the phasing factor: 1 a full DyReLU, 0 an exact ReLU

    def __init__(self, channels: int, reduction: int = 4, k: int = 2):
        super().__init__()
        self.channels, self.k = channels, k
        hidden = max(channels // reduction, 1)
        self.hyper = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, 2 * k * channels))
        self.register_buffer("lambdas", torch.tensor([1.0] * k + [0.5] * k))
        self.register_buffer("init", torch.tensor([1.0] + [0.0] * (2 * k - 1)))
        self.register_buffer("beta", torch.tensor(1.0))

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """``(a_1..a_k, b_1..b_k)`` per input and channel: (batch, channels, 2k), phased by ``beta``."""
        # reshaped, not branched on the rank: torch.fx traces it as one graph for inputs of any rank
        pooled = x.reshape(x.shape[0], self.channels, -1).mean(2)
        theta = 2 * torch.sigmoid(self.hyper(pooled)) - 1
        coeff = theta.reshape(x.shape[0], self.channels, 2 * self.k) * self.lambdas + self.init
        return self.beta * coeff + (1 - self.beta) * self.init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.coefficients(x).unsqueeze(2)  # (batch, channels, 1, 2k): the same over positions
        flat = x.reshape(x.shape[0], self.channels, -1, 1)
        return (flat * c[..., : self.k] + c[..., self.k :]).amax(-1).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, k={self.k}, beta={float(self.beta):g}"


def phase(model: nn.Module, beta: float) -> int:
    """Set every DyReLU's ``beta`` in ``model``; returns how many there are.

    >>> phase(nn.Sequential(nn.Conv2d(3, 8, 3), DyReLU(8)), 0.25)
    1
    """
    acts = [m for m in model.modules() if isinstance(m, DyReLU)]
    for m in acts:
        m.beta.fill_(float(beta))
    return len(acts)


def phase_out(model: nn.Module) -> int:
    """Replace every DyReLU whose ``beta`` is 0 (an exact ReLU) by ``nn.ReLU``; returns how many.

    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), DyReLU(8))
    >>> phase(net, 0.0), phase_out(net), type(net[1]).__name__
    (1, 1, 'ReLU')
    """
    done = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, DyReLU) and float(child.beta) == 0.0:
                setattr(parent, name, nn.ReLU())
                done += 1
    return done

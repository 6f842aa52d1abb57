"""The sizes the paper's guarantee asks for: how many inputs S must hold, and how many draws each
(neuron, sign) row takes so that, with probability at least ``1 - delta``, every output of the
network stays within a relative error ``epsilon``.

With ``eta`` the number of neurons of all the sampled layers, ``eta*`` the widest layer but the last,
``L`` the number of layers and ``S_r`` a row's total sensitivity:

- the sample: ``|S| = ceil(log(8 eta eta* / delta) log(eta eta*))``;
- each layer's tolerance: ``eps_l = eps / (2 (L - 1) Delta^(l->))``, where ``Delta^(l->)`` is the
  product over layer ``l`` and the layers after it of ``Delta^k = max_i mean_S Delta_i(x) + kappa``
  (how much a neuron's positive and negative parts cancel on S, plus a tail term
  ``kappa = sqrt(2 lam) (1 + sqrt(2 lam) log(8 eta eta* / delta))``, ``lam = log(eta eta*) / 2``);
- each row's draws: ``m_r = ceil(8 S_r K log(8 eta / delta) / eps_l^2)``, with ``K`` the constant of
  the paper's assumption on how sensitivities are distributed, taken as 1.

These are Baykal et al.'s (ICLR 2019) Algorithms 1 and 2 as this project records them; the paper could
not be consulted where this was written, so they are worth checking against it. They are loose: on
LeNet-300-100, ``kappa`` is about 190, and the first layer's rows ask for some 1e20 draws at
``eps = 0.1``, which keeps every weight (docs/corenet.md measures it).

Example: ``sample_size([300, 100, 10], 0.05)`` (see :func:`sample_size`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["sample_size", "depth_factors", "draws_for"]


def _eta(widths: Sequence[int]) -> tuple[int, int]:
    eta = sum(widths)
    return eta, (max(widths[:-1]) if len(widths) > 1 else eta)


def sample_size(widths: Sequence[int], delta: float) -> int:
    """``|S|`` for layers of ``widths`` neurons (in forward order) and failure probability ``delta``.

    >>> sample_size([300, 100, 10], 0.05)  # LeNet-300-100
    197
    """
    eta, star = _eta(widths)
    return math.ceil(math.log(8 * eta * star / delta) * math.log(max(eta * star, 2)))


def depth_factors(widths: Sequence[int], delta_means: Sequence[float], delta: float) -> list[float]:
    """``Delta^(l->)`` per layer, from each layer's ``max_i mean_S Delta_i(x)`` and the tail term.

    >>> [round(f) for f in depth_factors([30, 5], [1.0, 2.0], 0.05)]  # kappa = 86.33: 87.33 * 88.33, 88.33
    [7715, 88]
    """
    eta, star = _eta(widths)
    lam = math.log(max(eta * star, 2)) / 2
    kappa = math.sqrt(2 * lam) * (1 + math.sqrt(2 * lam) * math.log(8 * eta * star / delta))
    out, run = [], 1.0
    for d in reversed(delta_means):
        run *= d + kappa
        out.append(run)
    return out[::-1]


def draws_for(
    mass: torch.Tensor, factor: float, layers: int, neurons: int, epsilon: float, delta: float, constant: float = 1.0
) -> torch.Tensor:
    """``m_r`` (float64, as large as it comes) for rows of total sensitivity ``mass`` in a layer of depth
    factor ``factor``, in a network of ``layers`` layers and ``neurons`` neurons.

    >>> draws_for(torch.tensor([2.0, 0.0]), 1.0, 2, 10, 0.5, 0.05)  # 8 * 2 * log(1600) / 0.25^2 = 1888.8
    tensor([1889.,    0.], dtype=torch.float64)
    """
    eps_l = epsilon / (2 * max(layers - 1, 1) * factor)
    return torch.ceil(8 * mass.to(torch.float64) * constant * math.log(8 * neurons / delta) / eps_l**2)

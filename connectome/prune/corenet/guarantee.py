"""CoreNet's guarantee, measured: with probability at least ``1 - delta`` over the draw and a fresh input,
every output of the sparsified network is within a relative error ``epsilon`` of the original's.

:func:`measure` runs both networks on held-out inputs (float64) and reports each output's relative
error ``|f'_k(x) - f_k(x)| / |f_k(x)|``, its distribution, and the share of inputs whose outputs are
*all* within ``epsilon`` (the guarantee is entry-wise), to set against ``1 - delta``.

Example: ``measure(model, result.weights, x_test, epsilon=0.1, delta=0.05).holds``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

__all__ = ["Guarantee", "measure"]


@dataclass
class Guarantee:
    epsilon: float
    delta: float
    errors: torch.Tensor  # (inputs, outputs): relative error of each output
    within: float  # share of inputs with every output within epsilon

    @property
    def holds(self) -> bool:
        """Whether the share within epsilon reaches ``1 - delta`` on these inputs."""
        return self.within >= 1 - self.delta

    def quantiles(self, qs: tuple[float, ...] = (0.5, 0.9, 0.99)) -> dict[float, float]:
        """Quantiles of the per-input worst relative error."""
        worst = self.errors.amax(1)
        return {q: float(torch.quantile(worst, q)) for q in qs}

    def summary(self) -> str:
        """One line for people."""
        q = self.quantiles()
        return (
            f"{100 * self.within:.1f}% of {self.errors.shape[0]:,} held-out inputs have every output within "
            f"{self.epsilon:g} relative error (target {100 * (1 - self.delta):.1f}%: "
            f"{'met' if self.holds else 'not met'}); worst relative error per input: median {q[0.5]:.3g}, "
            f"90% {q[0.9]:.3g}, 99% {q[0.99]:.3g}"
        )


def measure(
    model: nn.Module, weights: dict[str, torch.Tensor], inputs: torch.Tensor, epsilon: float, delta: float
) -> Guarantee:
    """Relative errors of the outputs of ``model`` with ``weights`` replaced, against ``model`` as it is.

    >>> net = nn.Linear(3, 2)
    >>> g = measure(net, {"weight": net.weight.detach() * 1.05}, torch.rand(8, 3) + 1, 0.1, 0.05)
    >>> g.errors.shape, g.within <= 1.0
    (torch.Size([8, 2]), True)
    """
    was = model.training
    model.eval()
    try:
        params = {k: v.detach().double() for k, v in list(model.named_parameters()) + list(model.named_buffers())}
        x = inputs.double()
        with torch.no_grad():
            exact = functional_call(model, params, (x,))
            approx = functional_call(model, {**params, **{k: v.double() for k, v in weights.items()}}, (x,))
    finally:
        model.train(was)
    exact, approx = exact.reshape(len(x), -1), approx.reshape(len(x), -1)
    errors = (approx - exact).abs() / exact.abs().clamp(min=torch.finfo(torch.float64).tiny)
    within = float((errors <= epsilon).all(1).double().mean())
    return Guarantee(float(epsilon), float(delta), errors, within)

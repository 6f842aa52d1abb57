"""RigL (Evci et al., 2020): every ``update_every`` steps until ``end`` of training, drop the smallest
magnitudes of each layer and grow the inactive connections with the largest dense-gradient magnitude;
new connections start at zero, and the share replaced decays on a cosine."""

from __future__ import annotations

import torch

from ..schedules import drop_fraction
from . import Policy, Update, drop_and_grow, policy


@policy("rigl")
class RigL(Policy):
    needs_grads = True
    grows = True

    def due(self, step: int) -> bool:
        return step % self.update_every == 0 and step < self.end

    def update(self, u: Update) -> dict[str, torch.Tensor]:
        assert u.grads is not None, "RigL grows by dense gradients: the loop must pass them"
        fraction = drop_fraction(self.drop_fraction, u.step, self.end)
        return drop_and_grow(u, fraction, self.grow_scores(u))

    def grow_scores(self, u: Update) -> dict[str, torch.Tensor]:
        assert u.grads is not None, "RigL grows by dense gradients: the loop must pass them"
        return {n: g.abs() for n, g in u.grads.items()}

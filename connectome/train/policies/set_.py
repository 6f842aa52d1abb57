"""SET (Mocanu et al., 2018): every ``update_every`` steps, drop the smallest magnitudes of each layer
and grow as many connections at random; new connections start at zero."""

from __future__ import annotations

import torch

from . import Policy, Update, drop_and_grow, policy


@policy("set")
class SET(Policy):
    grows = True

    def due(self, step: int) -> bool:
        return step % self.update_every == 0 and step < self.end

    def update(self, u: Update) -> dict[str, torch.Tensor]:
        return drop_and_grow(u, self.drop_fraction, self.grow_scores(u))

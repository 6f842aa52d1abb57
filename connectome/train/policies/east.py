"""EAST's cyclic sparsity (arXiv 2411.13545) on RigL: for ``cycles`` cycles of ``cycle_epochs`` epochs, the
density follows a cosine between the budget's density ``d`` and ``3 d`` (:func:`..east.cyclic_density`),
low at each cycle's ends and high half-way. At each update every layer moves to its ERK count at the
density of the moment: going down drops the smallest magnitudes, going up grows the inactive entries
with the largest dense-gradient magnitude (RigL's criterion), new ones at zero. After the cycles, plain
RigL with an update interval ``long_every`` times longer, until ``end``.

Each cycle ends where it began, so the counts come back to the budget's ERK counts exactly.
"""

from __future__ import annotations

import torch

from ...prune.quotas import erk, kept_counts
from ..east.schedules import cyclic_density
from ..schedules import drop_fraction
from . import Policy, Update, drop_and_grow, drop_smallest, grow_best, policy


def erk_counts(masks: dict[str, torch.Tensor], density: float) -> dict[str, int]:
    """Each layer's kept count at ``density`` under ERK, adding up to the whole count at that density.

    >>> m = {"a": torch.zeros(300, 784, dtype=torch.bool), "b": torch.zeros(10, 300, dtype=torch.bool)}
    >>> erk_counts(m, 0.02), int(0.02 * (300 * 784 + 10 * 300))   # counts 1084 e and 310 e, e = 3.4175
    ({'a': 3705, 'b': 1059}, 4764)
    """
    shapes = [tuple(m.shape) for m in masks.values()]
    counts = kept_counts(shapes, erk(shapes, 1.0 - density))
    return dict(zip(masks, counts))


@policy("east")
class EAST(Policy):
    needs_grads = True
    grows = True
    keeps_counts = False  # the cycles move the counts; they come back to the budget's at each cycle's end

    def __init__(
        self,
        total: int,
        sparsity: float = 0.9,
        steps_per_epoch: int = 1,
        cycles: int = 2,
        cycle_epochs: float = 50.0,
        long_every: int = 4,
        **kw,
    ):
        super().__init__(total, **kw)
        self.density = 1.0 - sparsity  # the budget: already adjusted where weights are shared
        self.cycles = max(int(cycles), 0)
        self.cycle = max(int(round(cycle_epochs * steps_per_epoch)), 1)
        self.long = self.update_every * max(int(long_every), 1)

    def in_cycles(self, step: int) -> bool:
        return step < self.cycles * self.cycle

    def density_at(self, step: int) -> float:
        """The target density after optimiser step ``step``."""
        if not self.in_cycles(step):
            return self.density
        return min(1.0, cyclic_density(step, self.density, 3.0 * self.density, self.cycle))

    def due(self, step: int) -> bool:
        if self.in_cycles(step) or step == self.cycles * self.cycle:  # the last cycle's end: back to the budget
            return step % self.update_every == 0 or step == self.cycles * self.cycle
        return step % self.long == 0 and step < self.end

    def update(self, u: Update) -> dict[str, torch.Tensor]:
        assert u.grads is not None, "EAST grows by dense gradients: the loop must pass them"
        if not self.in_cycles(u.step) and u.step != self.cycles * self.cycle:
            return drop_and_grow(u, drop_fraction(self.drop_fraction, u.step, self.end), self.grow_scores(u))
        masks = {n: m & ~u.drop_first[n] if n in u.drop_first else m for n, m in u.masks.items()}
        target = self.counts(u)
        now = {n: int(m.sum()) for n, m in masks.items()}
        dropped = drop_smallest(u.weights, masks, {n: max(now[n] - target[n], 0) for n in masks})
        return grow_best(dropped, self.grow_scores(u), {n: max(target[n] - now[n], 0) for n in masks}, u.growable)

    def counts(self, u: Update) -> dict[str, int]:
        if not self.in_cycles(u.step) and u.step != self.cycles * self.cycle:
            return super().counts(u)
        return erk_counts(u.masks, self.density_at(u.step))

    def grow_scores(self, u: Update) -> dict[str, torch.Tensor]:
        assert u.grads is not None, "EAST grows by dense gradients: the loop must pass them"
        return {n: g.abs() for n, g in u.grads.items()}

"""Gradual magnitude pruning (Zhu & Gupta, 2017): from the starting masks (dense by default), every
``update_every`` steps until ``end`` of training, keep the largest magnitudes at the cubic schedule's
sparsity, under the run's layer quota. Once pruned, a weight stays pruned."""

from __future__ import annotations

import torch

from ...prune.select import select
from ..schedules import gmp_sparsity
from . import Policy, Update, policy


@policy("gmp")
class GMP(Policy):
    keeps_counts = False

    def __init__(self, total: int, sparsity: float = 0.9, quota: str | None = "uniform", start: float = 0.0, **kw):
        super().__init__(total, **kw)
        self.sparsity = sparsity
        self.quota = quota
        self.start = int(start * total)

    def due(self, step: int) -> bool:
        return self.start <= step <= self.end and (step % self.update_every == 0 or step == self.end)

    def update(self, u: Update) -> dict[str, torch.Tensor]:
        target = gmp_sparsity(self.sparsity, u.step, self.start, self.end)
        scores = {n: w.detach().abs() for n, w in u.weights.items()}
        return select(scores, target, self.quota, within=u.masks)

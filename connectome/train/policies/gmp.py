"""Gradual magnitude pruning (Zhu & Gupta, 2017): from the starting masks (dense by default), every
``update_every`` steps until ``end`` of training, keep the largest magnitudes at the cubic schedule's
sparsity, under the run's layer quota. The ramp starts from the starting masks' sparsity (a pruned
checkpoint is not made denser), and once pruned, a weight stays pruned."""

from __future__ import annotations

import torch

from ...prune.select import select
from ..schedules import gmp_sparsity
from . import Policy, Update, policy


@policy("gmp")
class GMP(Policy):
    keeps_counts = False

    def __init__(
        self,
        total: int,
        sparsity: float = 0.9,
        quota: str | None = "uniform",
        start: float = 0.0,
        initial: float = 0.0,
        **kw,
    ):
        super().__init__(total, **kw)
        self.sparsity = sparsity
        self.quota = quota
        self.start = int(start * total)
        self.initial = initial  # the starting masks' sparsity: the ramp begins there

    def due(self, step: int) -> bool:
        return self.start <= step <= self.end and (step % self.update_every == 0 or step == self.end)

    def update(self, u: Update) -> dict[str, torch.Tensor]:
        total = sum(m.numel() for m in u.masks.values())
        now = 1.0 - sum(int(m.sum()) for m in u.masks.values()) / max(total, 1)
        target = max(gmp_sparsity(self.sparsity, u.step, self.start, self.end, self.initial), now)
        scores = {n: w.detach().abs() for n, w in u.weights.items()}
        new = select(scores, target, self.quota, within=u.masks)
        return {n: new[n] & u.masks[n] for n in new}  # a quota never brings a pruned weight back

"""Schedules: the learning rate over steps, RigL's drop fraction, and GMP's cubic sparsity ramp.

Examples
--------
>>> lr = LearningRate(0.1, total=100, kind="cosine", warmup=10)
>>> [round(lr(s), 4) for s in (0, 9, 10, 55, 100)]
[0.01, 0.1, 0.1, 0.05, 0.0]
>>> round(drop_fraction(0.3, step=0, end=100), 3), round(drop_fraction(0.3, step=50, end=100), 3)
(0.3, 0.15)
>>> round(gmp_sparsity(0.9, step=50, start=0, end=100), 4)          # 0.9 * (1 - (1 - 0.5) ** 3)
0.7875
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LearningRate", "drop_fraction", "gmp_sparsity", "LR_KINDS"]

LR_KINDS = ("cosine", "step", "constant")


@dataclass(frozen=True)
class LearningRate:
    """The learning rate at a step: linear warm-up over ``warmup`` steps, then ``kind``.

    ``cosine`` falls from ``base`` to 0 at ``total``; ``step`` multiplies by ``gamma`` at each fraction
    of training in ``milestones`` (default: at 50% and 75%); ``constant`` stays at ``base``.
    """

    base: float
    total: int
    kind: str = "cosine"
    warmup: int = 0
    gamma: float = 0.1
    milestones: tuple[float, ...] = (0.5, 0.75)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.base * (step + 1) / self.warmup
        if self.kind == "cosine":
            span = max(self.total - self.warmup, 1)
            t = min(max(step - self.warmup, 0) / span, 1.0)
            return self.base * 0.5 * (1.0 + math.cos(math.pi * t))
        if self.kind == "step":
            passed = sum(1 for m in self.milestones if step >= m * self.total)
            return self.base * self.gamma**passed
        return self.base


def drop_fraction(initial: float, step: int, end: int) -> float:
    """RigL's cosine decay of the share of active weights replaced at an update: ``initial`` at step 0,
    ``initial / 2 * (1 + cos(pi * step / end))`` after, 0 from ``end`` on (Evci et al., 2020)."""
    if step >= end:
        return 0.0
    return initial / 2.0 * (1.0 + math.cos(math.pi * step / max(end, 1)))


def gmp_sparsity(final: float, step: int, start: int, end: int, initial: float = 0.0) -> float:
    """Gradual magnitude pruning's target (Zhu & Gupta, 2017): ``initial`` until ``start``, then
    ``final + (initial - final) * (1 - (step - start) / (end - start)) ** 3``, ``final`` from ``end``."""
    if step <= start:
        return initial
    if step >= end:
        return final
    t = (step - start) / max(end - start, 1)
    return final + (initial - final) * (1.0 - t) ** 3

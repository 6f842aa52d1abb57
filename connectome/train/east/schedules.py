"""EAST's schedules: DyReLU's phasing factor, the cyclic density, and the density adjusted so that a
model with shared weights keeps the budget it would have without sharing.

Examples
--------
>>> phasing_window(milestone=40)            # from half the first LR milestone to the milestone
(20.0, 40.0)
>>> [phase_beta(e, 20, 40) for e in (0, 20, 30, 40, 50)]
[1.0, 1.0, 0.5, 0.0, 0.0]
>>> round(cyclic_density(25, 0.001, 0.003, 100), 6)   # a quarter of the way: half-way up the cosine
0.002
>>> adjusted_density(0.001, own=1000, shared=500)
0.0015
"""

from __future__ import annotations

import math

__all__ = ["phasing_window", "phase_beta", "cyclic_density", "adjusted_density"]


def phasing_window(milestone: float) -> tuple[float, float]:
    """The default epochs over which DyReLU is phased out: from half the first LR milestone to it."""
    return milestone / 2, float(milestone)


def phase_beta(epoch: float, start: float, end: float) -> float:
    """DyReLU's ``beta`` at ``epoch`` (fractional): 1 until ``start``, linear to 0 at ``end``, 0 after."""
    if epoch <= start:
        return 1.0
    if epoch >= end:
        return 0.0
    return 1.0 - (epoch - start) / (end - start)


def cyclic_density(t: float, low: float, high: float, length: float) -> float:
    """The density ``t`` into a run of cycles of ``length``: ``low + (high - low) (1 - cos 2 pi p) / 2``
    with ``p`` the fraction of the current cycle (``low`` at each cycle's ends, ``high`` half-way)."""
    p = (t % length) / length
    return low + (high - low) * (1.0 - math.cos(2.0 * math.pi * p)) / 2.0


def adjusted_density(density: float, own: int, shared: int) -> float:
    """The density of a model's own weights that keeps the budget of ``own + shared`` weights at
    ``density``: ``density * (own + shared) / own``, where ``shared`` counts the weights that blocks
    reusing another block's convolutions would have had of their own."""
    return density * (own + shared) / own

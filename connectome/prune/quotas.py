"""Layer quotas: how much of each layer to keep for an overall sparsity.

Every quota has one signature, ``quota(shapes, sparsity) -> densities``: the shapes of the prunable
weights in order (first layer first), the target sparsity, and one density per layer in ``[0, 1]``
whose kept counts add up to the budget ``floor((1 - sparsity) * total)``, so that the sparsity reached is
never below the one asked for. :func:`kept_counts` turns
densities into whole numbers of weights that add up to the budget exactly.

- ``uniform``: every layer at the same density.
- ``uniform_plus``: the first layer dense, the last at most 80% sparse, the rest share the budget.
- ``erk``: RigL's Erdős–Rényi-Kernel: density proportional to (sum of dims) / (product of dims),
  scaled to the budget; a layer that would exceed density 1 is made dense and the scale solved again.
- ``igq``: ideal gas quotas: density ``1 / (1 + F * n)`` for a layer of ``n`` weights, with ``F`` found
  by bisection so that the kept count meets the budget. Small layers stay dense, large ones thin out.

Examples
--------
>>> shapes = [(300, 784), (100, 300), (10, 100)]
>>> [round(d, 4) for d in igq(shapes, 0.99)]
[0.0046, 0.0351, 0.5219]
>>> counts = kept_counts(shapes, igq(shapes, 0.99))
>>> counts, sum(counts) == budget(shapes, 0.99)
([1087, 1053, 522], True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from math import prod

import numpy as np

from ..registry import register

__all__ = [
    "PruneError",
    "QUOTAS",
    "quota",
    "uniform",
    "uniform_plus",
    "erk",
    "igq",
    "kept_counts",
    "budget",
    "check_sparsity",
]

Shapes = Sequence[Sequence[int]]


class PruneError(ValueError):
    """A pruning request that cannot be met (unknown method, impossible sparsity, missing data)."""


QUOTAS: dict[str, Callable[[Shapes, float], list[float]]] = {}


def quota(name: str) -> Callable:
    """Register a quota under ``name`` (a second registration of one name is an error).

    A quota maps layer shapes and a sparsity to one density per layer:

    >>> @quota("first_dense_demo")
    ... def first_dense(shapes, sparsity):
    ...     return [1.0] + [1.0 - sparsity] * (len(shapes) - 1)
    >>> QUOTAS["first_dense_demo"]([(2, 2), (4, 4)], 0.5)
    [1.0, 0.5]
    >>> del QUOTAS["first_dense_demo"]
    """

    def deco(fn: Callable[[Shapes, float], list[float]]) -> Callable[[Shapes, float], list[float]]:
        register(QUOTAS, name, fn, "quota")
        return fn

    return deco


def check_sparsity(sparsity: float) -> float:
    """``sparsity`` itself, or a :class:`PruneError` when it lies outside [0, 1].

    >>> check_sparsity(0.99)
    0.99
    """
    if not 0.0 <= sparsity <= 1.0:
        raise PruneError(f"sparsity must lie in [0, 1], not {sparsity}")
    return sparsity


def budget(shapes: Shapes, sparsity: float) -> int:
    """How many weights a sparsity keeps in all: ``floor((1 - sparsity) * total)``, so that the sparsity
    reached is never below the one asked for (and a claim of it holds).

    >>> budget([(1000, 1000)], 0.999), budget([(266200,)], 0.9)
    (1000, 26620)
    """
    check_sparsity(sparsity)
    return _floor((1.0 - sparsity) * sum(prod(s) for s in shapes))


def _floor(x: float) -> int:
    # (1 - 0.9) * 266200 is 26619.999999999996 in floating point: the float error, not the user, asks for less
    return math.floor(x + 1e-6)


def kept_counts(shapes: Shapes, densities: Sequence[float], total: int | None = None) -> list[int]:
    """Whole kept counts per layer, by largest remainders, that add up to ``total`` (by default what the
    densities keep, rounded down as :func:`budget` rounds).

    >>> kept_counts([(3,), (3,)], [0.5, 0.5])
    [2, 1]
    """
    sizes = np.array([prod(s) for s in shapes], dtype=np.int64)
    want = np.asarray(densities, dtype=np.float64) * sizes
    total = _floor(float(want.sum())) if total is None else total
    k = np.minimum(np.floor(want + 1e-9).astype(np.int64), sizes)
    order = np.argsort(-(want - k), kind="stable")
    for i in order:
        if k.sum() >= total:
            break
        if k[i] < sizes[i]:
            k[i] += 1
    return k.tolist()


@quota("uniform")
def uniform(shapes: Shapes, sparsity: float) -> list[float]:
    """Every layer at density ``1 - sparsity``.

    >>> uniform([(4, 4), (2, 4)], 0.75)
    [0.25, 0.25]
    """
    check_sparsity(sparsity)
    return [1.0 - sparsity] * len(shapes)


@quota("uniform_plus")
def uniform_plus(shapes: Shapes, sparsity: float) -> list[float]:
    """The first layer dense, the last layer at density >= 0.2, the rest at one shared density.

    >>> uniform_plus([(10, 10), (100, 100), (2, 10)], 0.9)    # (1012 - 100 - 0.2 * 20) / 10000
    [1.0, 0.0908, 0.2]
    """
    n = [prod(s) for s in shapes]
    k = budget(shapes, sparsity)
    if len(n) == 1:
        return [k / n[0]]
    if k < n[0]:
        raise PruneError(
            f"sparsity {sparsity} keeps {k} weights, fewer than the dense first layer's {n[0]}: "
            "uniform_plus cannot meet it; use another quota"
        )
    shared = (k - n[0]) / sum(n[1:])  # every layer after the first at one density
    if shared >= 0.2:
        return [1.0] + [shared] * (len(n) - 1)
    rest = k - n[0] - 0.2 * n[-1]  # the last layer floors at density 0.2
    if rest < 0 or len(n) == 2:
        raise PruneError(
            f"sparsity {sparsity} is too high for uniform_plus: the dense first layer and the last "
            "layer at density 0.2 exceed the budget; use another quota"
        )
    return [1.0] + [rest / sum(n[1:-1])] * (len(n) - 2) + [0.2]


@quota("erk")
def erk(shapes: Shapes, sparsity: float) -> list[float]:
    """RigL's ERK densities (see the module docs); never above 1.

    >>> [round(d, 4) for d in erk([(300, 784), (100, 300), (10, 100)], 0.98)]
    [0.0154, 0.0445, 0.3674]
    """
    n = np.array([prod(s) for s in shapes], dtype=np.float64)
    raw = np.array([sum(s) / prod(s) for s in shapes], dtype=np.float64)
    k = float(budget(shapes, sparsity))
    dense = np.zeros(len(n), bool)
    while True:
        free = k - n[dense].sum()
        eps = free / (raw[~dense] * n[~dense]).sum() if (~dense).any() else 0.0
        d = np.where(dense, 1.0, eps * raw)
        over = ~dense & (d > 1.0)
        if not over.any():
            return np.clip(d, 0.0, 1.0).tolist()
        dense |= over


@quota("igq")
def igq(shapes: Shapes, sparsity: float) -> list[float]:
    """Ideal gas quotas: ``1 / (1 + F * n_l)`` with ``F`` bisected to meet the budget.

    >>> [round(d, 6) for d in igq([(1, 10), (1, 30)], 0.5)]   # 10/(1+10F) + 30/(1+30F) = 20
    [0.697224, 0.434259]
    """
    n = np.array([prod(s) for s in shapes], dtype=np.float64)
    k = budget(shapes, sparsity)
    if k >= n.sum():
        return [1.0] * len(n)
    if k <= 0:
        return [0.0] * len(n)

    def kept(f: float) -> float:
        return float((n / (1.0 + f * n)).sum())

    lo, hi = 0.0, 1.0
    while kept(hi) > k:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if kept(mid) > k:
            lo = mid
        else:
            hi = mid
    return (1.0 / (1.0 + hi * n)).tolist()  # keeps k to within float error (kept_counts allows for it)

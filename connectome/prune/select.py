"""Selection: scores in, masks out, with exact kept counts and ties broken by position.

Without a quota, all layers compete for one global budget; with one, each layer keeps its own count.
Sorting is stable, so among equal scores the weight that comes first (layer order, then flat index)
is kept: the same scores always give the same masks.

Examples
--------
>>> import torch
>>> s = {"a": torch.tensor([3.0, 1.0, 2.0]), "b": torch.tensor([2.0, 0.5, 2.0])}
>>> {k: v.int().tolist() for k, v in select(s, 0.5).items()}      # keep 3 of 6: 3.0, then 2.0 twice
{'a': [1, 0, 1], 'b': [1, 0, 0]}
>>> {k: v.int().tolist() for k, v in select(s, 0.5, quota="uniform").items()}
{'a': [1, 0, 1], 'b': [1, 0, 0]}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from .quotas import QUOTAS, PruneError, budget, kept_counts

__all__ = ["select", "select_count", "top_k", "Ranking", "quota_fn"]


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A bool mask of ``scores``' shape keeping the ``k`` largest; ties go to the lower flat index.

    One selection (``kthvalue``), not a sort: O(n), so an iterative method can call it every round.

    >>> top_k(torch.tensor([1.0, 2.0, 2.0, 0.0]), 2).tolist()
    [False, True, True, False]
    """
    flat = torch.nan_to_num(scores.detach().flatten().double(), nan=float("-inf"))
    n = flat.numel()
    if k <= 0 or n == 0:
        return torch.zeros(scores.shape, dtype=torch.bool)
    if k >= n:
        return torch.ones(scores.shape, dtype=torch.bool)
    threshold = torch.kthvalue(flat, n - k + 1).values  # the k-th largest
    keep = flat > threshold
    ties = torch.nonzero(flat == threshold).flatten()[: k - int(keep.sum())]
    keep[ties] = True
    return keep.view(scores.shape)


def quota_fn(quota: str | None) -> Callable | None:
    """The registered quota called ``quota`` (None for global selection), or a :class:`PruneError`.

    >>> quota_fn("igq").__name__, quota_fn(None)
    ('igq', None)
    """
    if quota is None:
        return None
    fn = QUOTAS.get(quota)
    if fn is None:
        raise PruneError(f"unknown quota {quota!r}: choose from {', '.join(sorted(QUOTAS))}")
    return fn


def _candidates(
    scores: Mapping[str, torch.Tensor], within: Mapping[str, torch.Tensor] | None
) -> dict[str, torch.Tensor]:
    """Flat float64 scores; NaN and weights outside ``within`` score ``-inf``, so they are taken last."""
    out = {}
    for n, sc in scores.items():
        flat = torch.nan_to_num(sc.detach().double().flatten(), nan=float("-inf"))
        if within is not None:
            flat = flat.masked_fill(~within[n].bool().flatten(), float("-inf"))
        out[n] = flat
    return out


def _layer_counts(fn: Callable, shapes: list[tuple[int, ...]], keep: int) -> list[int]:
    total = sum(math.prod(s) for s in shapes)
    return kept_counts(shapes, fn(shapes, 1.0 - keep / total if total else 0.0), keep)


def _split(flat: torch.Tensor, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    out, start = {}, 0
    for n, shape in shapes.items():
        size = math.prod(shape)
        out[n] = flat[start : start + size].view(shape)
        start += size
    return out


class Ranking:
    """Scores sorted once, so that masks for any number of kept weights cost one scatter (targeting).

    Masks for more kept weights contain those for fewer (per layer too, under a quota whose counts grow
    with the budget).

    >>> r = Ranking({"w": torch.tensor([0.1, 0.9, 0.5])})
    >>> r.masks(1)["w"].tolist(), r.masks(2)["w"].tolist()
    ([False, True, False], [False, True, True])
    """

    def __init__(
        self,
        scores: Mapping[str, torch.Tensor],
        quota: str | None = None,
        within: Mapping[str, torch.Tensor] | None = None,
    ):
        self.shapes = {n: tuple(sc.shape) for n, sc in scores.items()}
        self.quota = quota_fn(quota)
        flat = _candidates(scores, within)
        if self.quota is not None:
            self.orders = [torch.argsort(f, descending=True, stable=True) for f in flat.values()]
        else:
            cat = torch.cat(list(flat.values())) if flat else torch.zeros(0, dtype=torch.float64)
            self.order = torch.argsort(cat, descending=True, stable=True)

    def masks(self, keep: int) -> dict[str, torch.Tensor]:
        """Bool masks keeping ``keep`` weights in all."""
        if self.quota is not None:
            counts = _layer_counts(self.quota, list(self.shapes.values()), keep)
            out = {}
            for (n, shape), order, k in zip(self.shapes.items(), self.orders, counts):
                m = torch.zeros(math.prod(shape), dtype=torch.bool)
                m[order[:k]] = True
                out[n] = m.view(shape)
            return out
        flat = torch.zeros(len(self.order), dtype=torch.bool)
        flat[self.order[:keep]] = True
        return _split(flat, self.shapes)


def select_count(
    scores: Mapping[str, torch.Tensor],
    keep: int,
    quota: str | None = None,
    within: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Masks keeping ``keep`` weights in all (see :func:`select`); ``within`` limits the candidates.

    >>> select_count({"w": torch.tensor([3.0, 1.0, 2.0])}, 1, within={"w": torch.tensor([False, True, True])})
    {'w': tensor([False, False,  True])}
    """
    fn = quota_fn(quota)
    shapes = {n: tuple(sc.shape) for n, sc in scores.items()}
    flat = _candidates(scores, within)
    if fn is not None:
        counts = _layer_counts(fn, list(shapes.values()), keep)
        return {n: top_k(f, k).view(shapes[n]) for (n, f), k in zip(flat.items(), counts)}
    if not flat:
        return {}
    return _split(top_k(torch.cat(list(flat.values())), keep), shapes)


def select(
    scores: Mapping[str, torch.Tensor],
    sparsity: float,
    quota: str | None = None,
    within: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Masks that keep ``floor((1 - sparsity) * total)`` weights: globally, or per layer under ``quota``.

    >>> s = {"a": torch.tensor([4.0, 3.0, 2.0, 1.0]), "b": torch.tensor([0.5, 0.6, 0.7, 0.8])}
    >>> {n: m.tolist() for n, m in select(s, 0.5).items()}                   # the 4 best overall
    {'a': [True, True, True, True], 'b': [False, False, False, False]}
    >>> {n: m.tolist() for n, m in select(s, 0.5, quota="uniform").items()}  # the 2 best in each
    {'a': [True, True, False, False], 'b': [False, False, True, True]}
    """
    return select_count(scores, budget([tuple(s.shape) for s in scores.values()], sparsity), quota, within)

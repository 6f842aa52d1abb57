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

from typing import Mapping

import torch

from .quotas import QUOTAS, budget, kept_counts

__all__ = ["select", "select_count", "top_k"]


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A bool mask of ``scores``' shape keeping the ``k`` largest; ties go to the lower flat index."""
    flat = torch.nan_to_num(scores.detach().flatten().double(), nan=float("-inf"))
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    if k > 0:
        keep[torch.argsort(flat, descending=True, stable=True)[:k]] = True
    return keep.view(scores.shape)


def select_count(scores: Mapping[str, torch.Tensor], keep: int, quota: str | None = None,
                 within: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Masks keeping ``keep`` weights in all (see :func:`select`); ``within`` limits the candidates."""
    names = list(scores)
    scored = {n: scores[n].double() if within is None else
              torch.where(within[n].bool(), scores[n].double(), torch.tensor(float("-inf"), dtype=torch.float64))
              for n in names}
    shapes = [tuple(scores[n].shape) for n in names]
    total = sum(s.numel() for s in scores.values())
    if quota is not None:
        fn = QUOTAS.get(quota)
        if fn is None:
            raise ValueError(f"unknown quota {quota!r}: choose from {', '.join(sorted(QUOTAS))}")
        counts = kept_counts(shapes, fn(shapes, 1.0 - keep / total if total else 0.0))
        return {n: top_k(scored[n], k) for n, k in zip(names, counts)}
    flat = torch.cat([scored[n].flatten() for n in names]) if names else torch.zeros(0)
    keep_flat = top_k(flat, keep)
    out, start = {}, 0
    for n in names:
        size = scores[n].numel()
        out[n] = keep_flat[start:start + size].view(scores[n].shape)
        start += size
    return out


def select(scores: Mapping[str, torch.Tensor], sparsity: float, quota: str | None = None,
           within: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Masks that keep ``round((1 - sparsity) * total)`` weights: globally, or per layer under ``quota``."""
    return select_count(scores, budget([tuple(s.shape) for s in scores.values()], sparsity), quota, within)

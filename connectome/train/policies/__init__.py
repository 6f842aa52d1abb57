"""Mask-update policies of dynamic sparse training: when to update, what to drop, what to grow.

A policy is a class registered by name (one file each, like the pruning scores). The training loop
asks :meth:`Policy.due` at every step and, when it says so, calls :meth:`Policy.update` with an
:class:`Update` (weights, masks, dense gradients if the policy asked for them, a seeded generator, and
which entries may grow) and installs the masks it returns. Except GMP, which prunes from dense, every
policy keeps each layer's count exactly.

Ties are broken by position (the lower flat index is dropped first and grown first), so the same
weights, gradients and seed always give the same masks.

Examples
--------
>>> import torch
>>> w = {"fc": torch.tensor([0.5, -0.1, 0.0, 2.0, 0.0])}
>>> m = {"fc": torch.tensor([True, True, False, True, False])}
>>> drop_smallest(w, m, {"fc": 1})["fc"].tolist()          # -0.1 is the smallest kept magnitude
[True, False, False, True, False]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from ...prune.select import top_k

__all__ = ["Policy", "Update", "POLICIES", "policy", "drop_smallest", "grow_best", "drop_and_grow"]

POLICIES: dict[str, type[Policy]] = {}


@dataclass
class Update:
    """What a policy sees at an update."""

    step: int
    total: int  # steps in the whole run
    weights: dict[str, torch.Tensor]  # current weights (masked entries are exactly zero)
    masks: dict[str, torch.Tensor]
    generator: torch.Generator
    grads: dict[str, torch.Tensor] | None = None  # dense gradients, for policies with needs_grads
    growable: dict[str, torch.Tensor] | None = None  # entries allowed to grow (None: any inactive one)
    drop_first: dict[str, torch.Tensor] = field(default_factory=dict)  # entries to drop before the policy's own


class Policy:
    """Base class: a static mask (never updated). Subclasses set ``name`` and override ``update``."""

    name = "static"
    needs_grads = False  # whether update() reads dense gradients (the loop then keeps them for that step)
    keeps_counts = True
    grows = False  # whether it grows weights (reclaim spends through its grow criterion)

    def __init__(self, total: int, update_every: int = 100, drop_fraction: float = 0.3, end: float = 0.75, **_):
        self.total = total
        self.update_every = max(int(update_every), 1)
        self.drop_fraction = drop_fraction
        self.end = max(int(end * total), 1)  # no update from here on

    def due(self, step: int) -> bool:
        """Whether to update the masks after optimiser step ``step`` (counted from 1)."""
        return False

    def update(self, u: Update) -> dict[str, torch.Tensor]:
        return dict(u.masks)

    def counts(self, u: Update) -> dict[str, int]:
        """Each layer's kept count after the update (what ``reclaim`` restores): the same as before."""
        return {n: int(m.sum()) for n, m in u.masks.items()}

    def grow_scores(self, u: Update) -> dict[str, torch.Tensor]:
        """How much each inactive entry deserves to grow: seeded noise unless the policy knows better."""
        return {n: torch.rand(m.shape, generator=u.generator, dtype=torch.float64) for n, m in u.masks.items()}


def policy(name: str) -> Callable[[type[Policy]], type[Policy]]:
    """Register a policy class under ``name``."""

    def register(cls: type[Policy]) -> type[Policy]:
        cls.name = name
        POLICIES[name] = cls
        return cls

    return register


POLICIES["static"] = Policy


def drop_smallest(
    weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor], counts: Mapping[str, int]
) -> dict[str, torch.Tensor]:
    """Masks with ``counts[name]`` of the smallest-magnitude kept weights of each layer dropped."""
    out = {}
    for n, m in masks.items():
        k = int(counts.get(n, 0))
        if k <= 0:
            out[n] = m.clone()
            continue
        score = -weights[n].detach().to(m.device).abs().double()
        score = torch.where(m, score, torch.tensor(float("-inf"), dtype=torch.float64, device=m.device))
        out[n] = m & ~top_k(score, k).to(m.device)
    return out


def grow_best(
    masks: Mapping[str, torch.Tensor],
    scores: Mapping[str, torch.Tensor],
    counts: Mapping[str, int],
    growable: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Masks with the ``counts[name]`` best-scored inactive (and growable) entries of each layer added."""
    out = {}
    for n, m in masks.items():
        k = int(counts.get(n, 0))
        allowed = ~m if growable is None or n not in growable else ~m & growable[n].to(m.device)
        k = min(k, int(allowed.sum()))
        if k <= 0:
            out[n] = m.clone()
            continue
        score = scores[n].detach().to(m.device).double()
        score = torch.where(allowed, score, torch.tensor(float("-inf"), dtype=torch.float64, device=m.device))
        out[n] = m | top_k(score, k).to(m.device)
    return out


def drop_and_grow(u: Update, fraction: float, grow_scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One update of SET or RigL: ``u.drop_first`` goes, then ``floor(fraction * kept)`` of the smallest
    magnitudes in each layer, then as many entries as went (both kinds) grow by ``grow_scores``."""
    masks = {n: m & ~u.drop_first[n] if n in u.drop_first else m for n, m in u.masks.items()}
    forced = {n: int(u.masks[n].sum()) - int(masks[n].sum()) for n in masks}
    counts = {n: int(fraction * int(m.sum())) for n, m in masks.items()}
    dropped = drop_smallest(u.weights, masks, counts)
    budget = {n: forced[n] + counts[n] for n in masks}
    return grow_best(dropped, grow_scores, budget, u.growable)


from . import east, gmp, rigl, set_  # noqa: E402,F401  (policies register themselves)

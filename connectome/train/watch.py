"""Effective sparsity during training, and the two options built on it: ``guard`` and ``reclaim``.

The model is traced once; after every mask update the walk runs again on the new masks (an
:class:`~connectome.analysis.Analyzer` re-lowers masks without re-tracing).

- **guard**: an update that would disconnect the network, or leave a layer that had effective weights
  with none, is repaired. In each such layer, an ineffective kept weight (the first) is swapped
  for the best-scored inactive weight *across the cut*: from an input unit that the inputs reach to an
  output unit that reaches the outputs, which by construction reconnects. Kept counts stay exact.
- **reclaim**: kept weights that are ineffective are dropped first at each update, and their budget
  is spent through the policy's grow criterion on weights across live units only, in rounds (each
  growth can make more units live), so that after the update every kept weight matters. A layer with
  fewer live pairs than its budget (one weight into a layer of ten outputs cannot feed three hundred
  effective weights before it) grows the rest by the criterion anywhere: counts stay exact.

Examples
--------
>>> import torch
>>> from connectome.analysis import Analyzer
>>> m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
>>> w = Watch(Analyzer(m, input_shape=(1, 3)))
>>> masks = {"0.weight": torch.tensor([[True, False, False], [False, False, False]]),
...          "2.weight": torch.tensor([[False, True]])}             # the two layers do not meet
>>> w.analyze(masks).collapsed
True
>>> fixed = w.repair(masks, {"0.weight": torch.rand(2, 3), "2.weight": torch.rand(1, 2)})
>>> w.analyze(fixed).collapsed, [int(v.sum()) for v in fixed.values()]
(False, [1, 1])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..analysis import Analysis, Analyzer
from .policies import Policy, Update, grow_best

__all__ = ["Watch", "live_pairs"]

_ROUNDS = 8  # reclaim passes, and repair passes per layer, before giving up


def live_pairs(res: Analysis, name: str, shape: tuple[int, ...]) -> torch.Tensor | None:
    """Entries of weight ``name`` joining an input unit the inputs reach to an output unit that reaches
    the outputs (None where the layer's units cannot be told apart, e.g. grouped convolutions)."""
    layer = name[: -len(".weight")] if name.endswith(".weight") else name
    if res.kinds.get(name, "").startswith("convT"):  # (in, out, ...): the other way round
        return None
    try:
        out = res.units(layer)["alive_to_output"]
        node = res._owner_node(layer)
    except (KeyError, StopIteration, LookupError):
        return None
    graph = res.walk.graph
    args = graph.args.get(node) or []
    x = res.walk.fwd.get(args[0]) if args else None
    cdim = getattr(graph.ops[node], "cdim", None)
    if x is None or len(shape) < 2 or out.shape[0] != shape[0]:
        return None
    x = x[0] if isinstance(x, tuple) else x
    alive_in = (x.with_cdim(cdim) if isinstance(cdim, int) else x).alive_units()
    if alive_in.shape[0] != shape[1]:
        return None
    pairs = np.logical_and.outer(out, alive_in).reshape(shape[:2] + (1,) * (len(shape) - 2))
    return torch.from_numpy(np.broadcast_to(pairs, shape).copy())


class Watch:
    """Analyses masks during training; applies ``guard`` and ``reclaim`` to the policy's updates."""

    def __init__(self, analyzer: Analyzer, guard: bool = False, reclaim: bool = False):
        self.analyzer = analyzer
        self.guard = guard
        self.reclaim = reclaim
        self.cut: list[str] = []  # the layers the last update cut, before any repair ("" for the whole network)
        self._last: tuple[dict[str, torch.Tensor], Analysis] | None = None

    def analyze(self, masks: dict[str, torch.Tensor]) -> Analysis:
        res = self.analyzer.run(masks)
        self._last = ({n: m.clone() for n, m in masks.items()}, res)  # a copy: a caller may edit its masks in place
        return res

    def _analysis_of(self, masks: dict[str, torch.Tensor]) -> Analysis:
        """The analysis of ``masks``, reusing the last one when they are the same masks."""
        if self._last is not None:
            seen, res = self._last
            if seen.keys() == masks.keys() and all(torch.equal(seen[n], masks[n]) for n in masks):
                return res
        return self.analyze(masks)

    @staticmethod
    def cuts(before: Analysis, after: Analysis) -> list[str]:
        """The layers that had effective weights before and have none after ("" when the network is cut)."""
        out = [
            n
            for n, e in after.effective_masks.items()
            if not bool(e.any()) and n in before.effective_masks and bool(before.effective_masks[n].any())
        ]
        return out + ([""] if after.collapsed and not before.collapsed else [])

    def summary(self, res: Analysis) -> dict[str, Any]:
        """Direct and effective sparsity, dead units and collapse: the fields of every log record."""
        dead = 0
        for row in res.layers:
            try:
                u = res.units(row["name"])
                dead += int((~(u["alive_from_input"] & u["alive_to_output"])).sum())
            except (KeyError, StopIteration, LookupError):
                dead += int(row["units_out"])
        return {
            "direct_sparsity": res.direct_sparsity,
            "effective_sparsity": res.effective_sparsity,
            "dead_units": dead,
            "collapsed": bool(res.collapsed),
            "kept": res.params_nonzero,
        }

    def update(self, policy: Policy, u: Update) -> tuple[dict[str, torch.Tensor], Analysis]:
        """The policy's new masks, reclaimed and guarded as asked, and their analysis; :attr:`cut` names
        the layers the policy's own masks cut."""
        before = self._analysis_of(u.masks)
        if self.reclaim and policy.grows:
            u.drop_first = self._ineffective(self.analyze(u.masks), u.masks)
            u.growable = self._growable(self.analyze(_without(u.masks, u.drop_first)), u.masks)
        new = policy.update(u)
        res = self.analyze(new)
        self.cut = self.cuts(before, res)
        if self.reclaim and policy.grows:
            new, res = self._reclaim(policy, u, new, res, policy.counts(u))
        if self.guard:
            new = self.repair(new, policy.grow_scores(u), before)
            res = self.analyze(new)
        return new, res

    def _reclaim(self, policy: Policy, u: Update, new: dict, res: Analysis, counts: dict) -> tuple[dict, Analysis]:
        """Drop what the update left ineffective and regrow as much across live units, in rounds: each
        growth can make more units live. A budget that finds no live pair at all grows anywhere, so
        that counts stay exact."""
        owed = {n: counts[n] - int(m.sum()) for n, m in new.items()}  # what the policy could not grow live
        for _ in range(_ROUNDS):
            stranded = self._ineffective(res, new)
            for n, st in stranded.items():
                owed[n] += int(st.sum())
            if not any(owed.values()):
                break
            pruned = _without(new, stranded)
            # liveness after the drop: a unit that only stranded weights reached is not live any more
            growable = self._growable(self.analyze(pruned), pruned)
            scores = policy.grow_scores(Update(u.step, u.total, u.weights, pruned, u.generator, u.grads, growable))
            new = grow_best(pruned, scores, owed, growable)
            owed = {n: owed[n] - (int(new[n].sum()) - int(pruned[n].sum())) for n in new}
            res = self.analyze(new)
        if any(owed.values()):
            new = grow_best(new, policy.grow_scores(u), owed)
            res = self.analyze(new)
        return new, res

    @staticmethod
    def _ineffective(res: Analysis, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: m & ~res.effective_masks[n] for n, m in masks.items() if n in res.effective_masks}

    def repair(
        self, masks: dict[str, torch.Tensor], scores: dict[str, torch.Tensor], before: Analysis | None = None
    ) -> dict[str, torch.Tensor]:
        """Masks with every cut layer reconnected by swaps (see the module docs); counts unchanged."""
        masks = dict(masks)
        for _ in range(_ROUNDS * max(len(masks), 1)):
            res = self.analyze(masks)
            cut = [n for n in masks if n in res.effective_masks and not bool(res.effective_masks[n].any())]
            if before is not None and not res.collapsed:  # only layers the update disconnected
                cut = [n for n in cut if n in before.effective_masks and bool(before.effective_masks[n].any())]
            if not cut and not res.collapsed:
                return masks
            swapped = False
            for n in cut or list(masks):
                pairs = live_pairs(res, n, tuple(masks[n].shape))
                if pairs is None or not bool((pairs & ~masks[n]).any()):
                    continue
                masks[n] = _swap(masks[n], res.effective_masks[n], pairs, scores[n], res)
                swapped = True
                break  # one layer per pass: two swaps at once can cross each other and cut again
            if not swapped:
                return masks  # nothing across the cut can be grown: the masks stay as the policy left them
        return masks

    def _growable(self, res: Analysis, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for n, m in masks.items():
            pairs = live_pairs(res, n, tuple(m.shape))
            if pairs is not None:
                out[n] = pairs
        return out


def _without(masks: dict[str, torch.Tensor], drop: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: m & ~drop[n] if n in drop else m for n, m in masks.items()}


def _swap(mask: torch.Tensor, effective: torch.Tensor, pairs: torch.Tensor, score: torch.Tensor, res) -> torch.Tensor:
    """``mask`` with its first ineffective kept weight swapped for the best-scored live pair."""
    pairs = pairs.to(mask.device)
    grow_score = torch.where(
        pairs & ~mask,
        score.to(mask.device).double(),
        torch.tensor(float("-inf"), dtype=torch.float64, device=mask.device),
    )
    grow = int(torch.argmax(grow_score.flatten()))
    out = mask.clone().flatten()
    spare = torch.nonzero((mask & ~effective).flatten()).flatten()
    if len(spare):
        out[int(spare[0])] = False
    out[grow] = True
    return out.view(mask.shape)

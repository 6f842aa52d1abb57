"""``connectome.prune.prune``: scores, then selection, aimed at the direct or the effective sparsity.

With ``target="effective"`` the scores stay fixed and a bisection over how many weights to keep
directly finds where the *effective* count crosses the budget: masks for more kept weights contain
those for fewer (top-k of fixed scores), so the effective count only grows, and the search needs at
most ``ceil(log2 N) + 2`` analyses, each on the one trace. Of the two counts either side of the
crossing, it keeps the one whose effective sparsity is at least the target, so that the target can be
claimed, unless that one is disconnected or more than 0.1% off.

Examples
--------
>>> import torch
>>> m = torch.nn.Sequential(torch.nn.Linear(20, 20), torch.nn.ReLU(), torch.nn.Linear(20, 2))
>>> p = prune(m, "random", 0.9, quota="igq", target="effective", input_shape=(1, 20))
>>> abs(p.analysis.effective_sparsity - 0.9) <= 0.001, p.analyses <= 11
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .. import memory
from ..analysis import Analysis, Analyzer
from ..batching import smaller_shape_hint
from ..graph.cost import activation_bytes
from ..graph.reduce import count_true
from ..io.masks import MaskSource, prunable_weights
from ..seeding import generator
from .quotas import PruneError, budget, check_sparsity
from .scores import SCORES, Context
from .select import Ranking, quota_fn, select

__all__ = ["Pruned", "prune"]


@dataclass
class Pruned:
    masks: dict[str, torch.Tensor]  # weight name -> bool mask
    analysis: Analysis  # of the pruned model
    analyses: int  # how many analyses effective targeting ran (1 otherwise)
    kept: int  # weights kept directly
    note: str | None = None  # why the effective target was missed, when it was


def prune(
    model: nn.Module,
    method: str,
    sparsity: float,
    quota: str | None = None,
    target: str = "direct",
    seed: int = 0,
    input_shape: Sequence[int] | None = None,
    batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    rounds: int = 100,
    log: Callable[[str], None] | None = None,
    tracer: str = "auto",
    input_dtype: torch.dtype | None = None,
) -> Pruned:
    """Masks for ``model`` at ``sparsity`` by ``method`` (see ``SCORES``), under an optional layer ``quota``.

    ``target="effective"`` makes the *effective* sparsity meet ``sparsity`` (within 0.1%).
    ``batch`` (inputs, class targets) feeds the data-driven methods (snip, grasp). ``tracer`` and
    ``input_dtype`` are those of :func:`connectome.analyze`. The model is not changed.

    >>> torch.manual_seed(0) and None
    >>> m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> p = prune(m, "magnitude", 0.75, quota="uniform", input_shape=(1, 8))
    >>> p.kept, p.analysis.direct_sparsity
    (20, 0.75)
    """
    spec = SCORES.get(method)
    if spec is None:
        raise PruneError(f"unknown pruning method {method!r}: choose from {', '.join(sorted(SCORES))}")
    if target not in ("direct", "effective"):
        raise PruneError(f"--target must be 'direct' or 'effective', not {target!r}")
    if spec.needs_data and batch is None:
        raise PruneError(f"{method} scores weights on data: give a batch (--data mnist, fashion-mnist or cifar10)")
    if input_shape is None:
        raise PruneError("an input shape is needed (--input-shape)")
    if spec.needs_data and batch is not None and tuple(batch[0].shape[1:]) != tuple(input_shape[1:]):
        raise PruneError(
            f"the data's examples are {_dims(batch[0].shape[1:])} but the model takes "
            f"{_dims(input_shape[1:])}: choose data that fits the model (--data)"
        )
    check_sparsity(sparsity)
    quota_fn(quota)  # an unknown quota fails now, not after the scores (100 rounds of synflow)
    log = log or (lambda msg: None)
    names = list(prunable_weights(model))
    if not names:
        raise PruneError("the model has no prunable weights (linear, conv, attention, embedding)")
    source = MaskSource(model)
    params = dict(model.named_parameters())
    # a weight's key is a parameter, prune's ``_orig``, or a module's computed weight (a parametrization)
    weights: dict[str, torch.Tensor] = {}
    for n in names:
        w = params[n] if n in params else params[n + "_orig"] if n + "_orig" in params else source.weight(n)
        if w is None:
            raise PruneError(f"cannot find the tensor of the prunable weight {n}")
        weights[n] = w
    start = {}
    for n in names:  # weights already masked (torch.nn.utils.prune, zeros) stay pruned
        mask = source.get(n)
        start[n] = mask if mask is not None else torch.ones_like(weights[n], dtype=torch.bool)
    ctx = Context(
        model,
        weights,
        dict(start),
        sparsity,
        select=lambda s, sp: select(s, sp, quota, within=ctx.masks),
        generator=generator(seed, "prune"),  # not the stream that torch.manual_seed(seed) gave the weights
        input_shape=tuple(input_shape),
        batch=batch,
        rounds=rounds,
        log=log,
    )
    analyzer = Analyzer(model, input_shape=tuple(input_shape), tracer=tracer, input_dtype=input_dtype)
    shapes = [tuple(int(d) for d in input_shape)]
    with memory.budget(
        subject=f"input {_dims(input_shape)}", hint=lambda need, lim: smaller_shape_hint(shapes, need, lim)
    ):
        _reserve_scoring(analyzer, method, len(batch[0]) if batch is not None else int(input_shape[0]))
    scores = spec.fn(ctx)
    if not any(bool((sc > 0).any()) for sc in scores.values()):
        zero = [n for n in names if not bool(start[n].any()) or not bool(weights[n].detach().ne(0).any())]
        why = (
            (
                f": {', '.join(zero[:3])} {'is' if len(zero) == 1 else 'are'} all zero and cut every path (a "
                "zero-initialised classifier head, as in torchvision's ViT)"
            )
            if zero
            else ""
        )
        raise PruneError(
            f"{method} scores every weight 0, so it cannot rank them{why}; load trained weights "
            "(--weights) or choose another method"
        )
    if target == "direct":
        masks = select(scores, sparsity, quota, within=start)
        return Pruned(masks, analyzer.run(masks), 1, _count(masks))
    return _effective(analyzer, scores, sparsity, quota, start, log)


def _reserve_scoring(analyzer: Analyzer, method: str, examples: int) -> None:
    """Scores run the model eagerly, with gradients: about three times its activations (twice for synflow,
    which works in float64), for as many examples as it is given."""
    traced = analyzer.traced
    first = traced.vals.get(traced.inputs[0]) if traced.inputs else None
    traced_batch = int(first.shape[0]) if isinstance(first, torch.Tensor) and first.dim() else 1
    per_example = activation_bytes(traced) / max(traced_batch, 1)
    factor = 6 if method == "synflow" else 3
    memory.reserve(int(factor * per_example * examples), f"scoring by {method} on {examples:,} example(s)")


def _dims(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


def _count(masks: dict[str, torch.Tensor]) -> int:
    return sum(count_true(m) for m in masks.values())


def _effective(
    analyzer: Analyzer,
    scores: dict[str, torch.Tensor],
    sparsity: float,
    quota: str | None,
    start: dict[str, torch.Tensor],
    log: Callable[[str], None],
) -> Pruned:
    total = sum(s.numel() for s in scores.values())
    want = budget([tuple(s.shape) for s in scores.values()], sparsity)
    ranking = Ranking(scores, quota, within=start)
    runs = 0

    def at(keep: int):
        nonlocal runs
        masks = ranking.masks(keep)
        res = analyzer.run(masks)
        runs += 1
        log(
            f"effective targeting: keep {keep:,} directly -> {res.params_effective:,} effective "
            f"(want {want:,}; analysis {runs})"
        )
        return masks, res

    lo_masks, lo_res = at(want)
    if lo_res.params_effective >= want:
        return Pruned(lo_masks, lo_res, runs, want)
    hi = _count(start)
    hi_masks, hi_res = at(hi)
    if hi_res.params_effective < want:
        raise PruneError(
            f"even keeping every weight leaves {hi_res.params_effective:,} effective, fewer than "
            f"the {want:,} that sparsity {sparsity} asks for"
        )
    lo = want
    while hi - lo > 1:  # invariant: effective(lo) < want <= effective(hi)
        mid = (lo + hi) // 2
        masks, res = at(mid)
        if res.params_effective >= want:
            hi, hi_masks, hi_res = mid, masks, res
        else:
            lo, lo_masks, lo_res = mid, masks, res
    # hi meets the effective count, lo falls short of it, so lo's sparsity is at least the target: the
    # one to claim, when it is still connected and within 0.1%
    over = hi_res.params_effective > want
    pick_lo = over and not lo_res.collapsed and lo_res.effective_sparsity - sparsity <= 0.001
    keep, masks, res = (lo, lo_masks, lo_res) if pick_lo else (hi, hi_masks, hi_res)
    bound = math.ceil(math.log2(max(total, 2))) + 2
    log(
        f"effective targeting: {runs} analyses (bound {bound}); kept {keep:,}, effective sparsity "
        f"{res.effective_sparsity:.4%}, direct {res.direct_sparsity:.4%}"
    )
    note = None
    if abs(res.effective_sparsity - sparsity) > 0.001:
        note = (
            f"no number of kept weights gets within 0.1% of effective sparsity {sparsity}: keeping {lo:,} "
            f"leaves {lo_res.params_effective:,} effective weights, keeping {hi:,} leaves "
            f"{hi_res.params_effective:,} (these scores disconnect the network until one weight joins a "
            "whole region); try a layer quota"
        )
        log(f"effective targeting: {note}")
    return Pruned(masks, res, runs, keep, note)

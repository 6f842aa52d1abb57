"""CoreNet on a whole model: sensitivities from one pass over the sample S, then sample sizes either
from the paper's error bound (``epsilon``, ``delta``: :mod:`.bounds`) or scaled so that the kept
weights meet a budget exactly, and the variants.

**Sample sizes from the bound** (``keep=None``): every (neuron, sign) row of total sensitivity ``S``
takes ``m = ceil(8 S K log(8 eta / delta) / eps_l^2)`` draws, ``eps_l = eps / (2 (L - 1) Delta^(l->))``
(:mod:`.bounds`). The draws are counted from their multinomial distribution at once, whatever ``m``.

**Under a budget** (``keep``), one scale remains free: every row gets ``m = ceil(lam * S *
(Delta^(l->))^2)`` draws for the ``lam`` that keeps exactly the budget (``split="paper"``). That split
starves every layer but the first: ``kappa`` is about 190 for LeNet-300-100, so ``Delta^(l->)`` grows
about 200-fold per layer and the first layer's rows take the whole budget (measured: at 15% kept, the
last two layers keep one weight per neuron and sign, and test accuracy falls from 98.5% to 14%).
``split="equal"`` (the default) gives every layer the same error, so ``m`` is proportional to ``S``
alone: 92.6% at 15% kept, before any fine-tuning.

**Variants.** ``plus`` (CoreNet+) first removes the neurons that never fire on S (every input column
they feed is zero on all of S) with their incoming weights, so no sample is spent on them.
A neuron is removed only where one layer alone reads it (:mod:`.chain`): behind a skip
connection, removing it would change what the skip carries. ``plusplus`` (CoreNet++) also
amplifies: it makes several independent draws of each layer and keeps the one whose output is
closest to the original's on a held-out part of S.

Biases are kept as they are (the paper folds them into the weights; keeping them exact only removes
error). Example: ``corenet(model, x, keep=0.15)`` (see :func:`corenet`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..quotas import PruneError
from .bounds import depth_factors, draws_for
from .chain import sole_readers
from .layers import Layer, gather, rows_of
from .sampling import allocate, draw, reweight, sample_counts

__all__ = ["Sparsified", "corenet", "VARIANTS"]

VARIANTS = ("corenet", "plus", "plusplus")


@dataclass
class Sparsified:
    weights: dict[str, torch.Tensor]  # the reweighted weights, by key
    masks: dict[str, torch.Tensor]  # what they keep
    budget: int  # the weights asked for (without a budget: those the bound kept)
    kept: int
    layers: list[Layer]
    removed_neurons: dict[str, int] = field(default_factory=dict)  # CoreNet+
    notes: list[str] = field(default_factory=list)


def _depth_factors(layers: list[Layer], delta: float) -> list[float]:
    """``Delta^(l->)`` per layer, from the means over S and the tail term."""
    widths = [lay.module.weight.shape[0] for lay in layers]
    return depth_factors(widths, [float(lay.delta_mean.max()) for lay in layers], delta)


def _dead_neurons(model: nn.Module, layers: list[Layer]) -> dict[str, torch.Tensor]:
    """CoreNet+: per layer, its neurons whose every input column in their sole reader is zero on all of S
    (see :mod:`.chain`: a layer read by anything else keeps all its neurons)."""
    by_name = {lay.name: lay for lay in layers}
    dead = {}
    for name, reader in sole_readers(model).items():
        lay, nxt = by_name.get(name), by_name.get(reader)
        if lay is None or nxt is None or nxt.fired is None:
            continue
        if nxt.fired.numel() == lay.module.weight.shape[0]:  # column j of the reader is neuron j
            dead[name] = ~nxt.fired
    return dead


def corenet(
    model: nn.Module,
    sample: torch.Tensor,
    keep: float | None,
    delta: float = 0.05,
    variant: str = "corenet",
    seed: int = 0,
    trials: int = 5,
    holdout: torch.Tensor | None = None,
    split: str = "equal",
    uniform: bool = False,
    epsilon: float = 0.1,
    constant: float = 1.0,
) -> Sparsified:
    """Sparsify ``model``'s linear and convolutional layers by CoreNet: to ``keep`` of their weights, or,
    with ``keep=None``, with the sample sizes that the paper's bound asks for ``epsilon`` and ``delta``.

    ``sample`` is S (a batch of inputs); ``holdout`` (CoreNet++) the inputs that choose among draws.
    ``uniform`` draws every weight of a sign set with the same probability (the uniform-sampling
    baseline); ``constant`` is the bound's ``K``. The model is not changed: the result holds the new
    weights and their masks.

    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    >>> r = corenet(net, torch.randn(64, 20), keep=0.3)
    >>> r.kept == r.budget == int(0.3 * 750)
    True
    >>> corenet(net, torch.randn(64, 20), keep=None, epsilon=0.1).kept  # the bound keeps every weight
    750
    """
    if variant not in VARIANTS:
        raise PruneError(f"unknown CoreNet variant {variant!r}: choose corenet, plus or plusplus")
    if keep is not None and not 0 < keep <= 1:
        raise PruneError(f"--keep must lie in (0, 1], not {keep}")
    if split not in ("equal", "paper"):
        raise PruneError(f"unknown error split {split!r}: choose equal or paper")
    if not 0 < delta < 1 or not epsilon > 0:
        raise PruneError(f"--delta must lie in (0, 1) and --epsilon above 0, not {delta} and {epsilon}")
    layers = gather(model, sample, deltas=split == "paper" or keep is None)
    if not layers:
        raise PruneError("the model has no linear or 2-D convolutional layer that ran on the sample")
    notes = [
        f"{lay.name}: inputs are signed (not behind a ReLU-family activation): the guarantee does not apply there"
        for lay in layers
        if not lay.nonnegative and not lay.reads_data
    ]
    total = sum(lay.module.weight.numel() for lay in layers)
    dead = _dead_neurons(model, layers) if variant in ("plus", "plusplus") else {}
    factors = _depth_factors(layers, delta) if split == "paper" or keep is None else [1.0] * len(layers)
    gen = torch.Generator().manual_seed(seed)
    sens = []
    for lay in layers:
        if uniform:
            s = (rows_of(lay.module) != 0).to(torch.float64)
        else:
            s = lay.sensitivities().reshape(lay.module.weight.shape[0], -1).to(torch.float64)
        if lay.name in dead:
            s[dead[lay.name]] = 0.0
        sens.append(s)
    seen = _inputs(model, layers, holdout if holdout is not None else sample) if variant == "plusplus" else {}
    budget: int | None = None
    if keep is None:
        neurons = sum(lay.module.weight.shape[0] for lay in layers)
        makers = []
        for lay, s, f in zip(layers, sens, factors):
            m = draws_for(_masses(lay, s), f, len(layers), neurons, epsilon, delta, constant)
            makers.append(lambda lay=lay, s=s, m=m: sample_counts(rows_of(lay.module), s, m, gen))
    else:
        budget = int(keep * total)
        makers = _budgeted(layers, sens, factors, budget, keep, gen)
    weights, masks = {}, {}
    for lay, make in zip(layers, makers):
        w = make().reshape(lay.module.weight.shape)
        if variant == "plusplus":
            w = _amplify(lay, w, trials, seen[lay.name], make)
        weights[lay.name] = w
        masks[lay.name] = w != 0
    kept = sum(int(mk.sum()) for mk in masks.values())
    removed = {n: int(v.sum()) for n, v in dead.items() if int(v.sum())}
    return Sparsified(weights, masks, kept if budget is None else budget, kept, layers, removed, notes)


def _masses(lay: Layer, s: torch.Tensor) -> torch.Tensor:
    """Each (neuron, sign) row's total sensitivity, positive rows first."""
    w = rows_of(lay.module)
    return torch.cat([torch.where(w > 0, s, 0.0).sum(1), torch.where(w < 0, s, 0.0).sum(1)])


def _budgeted(layers: list[Layer], sens: list[torch.Tensor], factors: list[float], budget: int, keep: float, gen):
    """Per layer, a function that draws the layer: the first draw meets the budget exactly across layers,
    and each later one (CoreNet++) keeps as many weights in its layer as the first."""
    # a row of one sign holds about half a neuron's weights, so about keep * width / 2 draws; and since a
    # row's draws grow with its total sensitivity, which varies far less across layers than their widths,
    # the widest layer's pool is a good guess for all. A layer whose pool runs short is drawn again, with
    # the longer pool that allocate asks for.
    pools = [max(16, math.ceil(keep * max(s.shape[1] for s in sens) / 2) + 8)] * len(sens)
    draws = [draw(rows_of(lay.module), s, pool, gen) for lay, s, pool in zip(layers, sens, pools)]
    bases = [d.mass * f**2 for d, f in zip(draws, factors)]
    while True:
        sizes, short = allocate(list(zip(draws, bases)), budget)
        again = [i for i, (out, s) in enumerate(zip(short, sens)) if out and pools[i] < 64 * s.shape[1]]
        if not again:
            break
        for i in again:
            pools[i] = min(64 * sens[i].shape[1], max(2 * pools[i], short[i]))
            draws[i] = draw(rows_of(layers[i].module), sens[i], pools[i], gen)
    makers = []
    for lay, d, m, s, base, pool in zip(layers, draws, sizes, sens, bases, pools):
        state: dict[str, torch.Tensor] = {}

        def make(lay=lay, d=d, m=m, s=s, base=base, pool=pool, state=state) -> torch.Tensor:
            if "weight" not in state:
                state["weight"] = reweight(lay.module.weight, d, m)
                return state["weight"]
            again = draw(rows_of(lay.module), s, pool, gen)
            (mm,), _ = allocate([(again, base)], int((state["weight"] != 0).sum()))
            return reweight(lay.module.weight, again, mm)

        makers.append(make)
    return makers


def _inputs(model: nn.Module, layers: list[Layer], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each layer's input on ``x`` (CoreNet++ compares a layer's outputs on the held-out inputs)."""
    got: dict[str, torch.Tensor] = {}
    handles = [
        lay.module.register_forward_pre_hook(lambda mod, args, name=lay.name: got.setdefault(name, args[0].detach()))
        for lay in layers
    ]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return got


def _amplify(lay: Layer, first: torch.Tensor, trials: int, x: torch.Tensor, make) -> torch.Tensor:
    """CoreNet++: the best of ``trials`` independent draws of the layer (``first`` and ``make()``), by the
    relative error of the layer's output on the held-out inputs ``x``."""
    exact = _output(lay, lay.module.weight.detach(), x)
    best, best_err = first, _error(_output(lay, first, x), exact)
    for _ in range(trials - 1):
        w = make().reshape(first.shape)
        err = _error(_output(lay, w, x), exact)
        if err < best_err:
            best, best_err = w, err
    return best


def _output(lay: Layer, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    m = lay.module
    with torch.no_grad():
        if isinstance(m, nn.Conv2d):
            return m._conv_forward(x, weight.to(x.dtype), m.bias)
        return F.linear(x, weight.to(x.dtype), m.bias)


def _error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return float((approx - exact).norm() / exact.norm().clamp(min=1e-30))

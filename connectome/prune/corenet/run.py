"""CoreNet on a whole model: sensitivities from one pass over the sample S, sample sizes from the
paper's split of the error across layers, scaled so that the kept weights meet a budget exactly, and
the variants.

**Sample sizes.** The paper takes ``m = ceil(8 S K log(8 eta / delta) / eps_l^2)`` draws for a neuron's
sign set of total sensitivity ``S``, with ``eps_l = eps / (2 (L - 1) Delta^(l->))``: the error allowed
in layer ``l`` shrinks with ``Delta^(l->)``, the product over ``l`` and the layers after it of
``Delta^k = max_i mean_S Delta_i(x) + kappa`` (how much neurons' positive and negative parts cancel,
plus a tail term ``kappa = sqrt(2 lam) (1 + sqrt(2 lam) log(8 eta eta* / delta))``, ``lam = log(eta
eta*) / 2``). A budget of kept weights fixes the one remaining scale: every (neuron, sign) row gets
``m = ceil(lam * S (Delta^(l->))^2)`` draws for the ``lam`` that keeps exactly the budget
(``split="paper"``).

Under a budget that split starves every layer but the first: ``kappa`` is about 190 for
LeNet-300-100, so ``Delta^(l->)`` grows about 200-fold per layer and the first layer's rows take the
whole budget (measured: at 15% kept, the last two layers keep one weight per neuron and sign, and
test accuracy falls from 98.5% to 14%). ``split="equal"`` (the default) gives every layer the same
error, so ``m`` is proportional to ``S`` alone: 92.6% at 15% kept, before any fine-tuning.

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
from .chain import sole_readers
from .layers import Layer, gather, rows_of
from .sampling import allocate, draw, reweight

__all__ = ["Sparsified", "corenet", "VARIANTS"]

VARIANTS = ("corenet", "plus", "plusplus")


@dataclass
class Sparsified:
    weights: dict[str, torch.Tensor]  # the reweighted weights, by key
    masks: dict[str, torch.Tensor]  # what they keep
    budget: int
    kept: int
    layers: list[Layer]
    removed_neurons: dict[str, int] = field(default_factory=dict)  # CoreNet+
    notes: list[str] = field(default_factory=list)


def _depth_factors(layers: list[Layer], delta: float) -> list[float]:
    """``Delta^(l->)`` per layer, from the means over S and the tail term."""
    eta = sum(lay.module.weight.shape[0] for lay in layers)
    widest = max(lay.module.weight.shape[0] for lay in layers[:-1]) if len(layers) > 1 else eta
    lam = math.log(max(eta * widest, 2)) / 2
    kappa = math.sqrt(2 * lam) * (1 + math.sqrt(2 * lam) * math.log(8 * eta * widest / delta))
    per = [float(lay.delta_mean.max()) + kappa for lay in layers]
    out, run = [], 1.0
    for d in reversed(per):
        run *= d
        out.append(run)
    return out[::-1]


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
    keep: float,
    delta: float = 0.05,
    variant: str = "corenet",
    seed: int = 0,
    trials: int = 5,
    holdout: torch.Tensor | None = None,
    split: str = "equal",
    uniform: bool = False,
) -> Sparsified:
    """Sparsify ``model``'s linear and convolutional layers to ``keep`` of their weights by CoreNet.

    ``sample`` is S (a batch of inputs); ``holdout`` (CoreNet++) the inputs that choose among draws.
    ``uniform`` draws every weight of a sign set with the same probability (the uniform-sampling
    baseline). The model is not changed: the result holds the new weights and their masks.

    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    >>> r = corenet(net, torch.randn(64, 20), keep=0.3)
    >>> r.kept == r.budget == int(0.3 * 750)
    True
    """
    if variant not in VARIANTS:
        raise PruneError(f"unknown CoreNet variant {variant!r}: choose corenet, plus or plusplus")
    if not 0 < keep <= 1:
        raise PruneError(f"--keep must lie in (0, 1], not {keep}")
    if split not in ("equal", "paper"):
        raise PruneError(f"unknown error split {split!r}: choose equal or paper")
    if not 0 < delta < 1:
        raise PruneError(f"--delta must lie in (0, 1), not {delta}")
    layers = gather(model, sample)
    if not layers:
        raise PruneError("the model has no linear or 2-D convolutional layer that ran on the sample")
    notes = [
        f"{lay.name}: inputs are signed (not behind a ReLU-family activation): the guarantee does not apply there"
        for lay in layers
        if not lay.nonnegative and not lay.reads_data
    ]
    total = sum(lay.module.weight.numel() for lay in layers)
    budget = int(keep * total)
    dead = _dead_neurons(model, layers) if variant in ("plus", "plusplus") else {}
    factors = _depth_factors(layers, delta) if split == "paper" else [1.0] * len(layers)
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
    width = max(s.shape[1] for s in sens)
    pool = min(2 * width, max(16, math.ceil(3 * keep * width)))  # longer only when a row runs short
    while True:
        draws = [draw(rows_of(lay.module), s, pool, gen) for lay, s in zip(layers, sens)]
        bases = [d.mass * f**2 for d, f in zip(draws, factors)]
        sizes, short = allocate(list(zip(draws, bases)), budget)
        if not short or pool >= 64 * width:
            break
        pool *= 2
    seen = _inputs(model, layers, holdout if holdout is not None else sample) if variant == "plusplus" else {}
    weights, masks = {}, {}
    for lay, d, m, s, base in zip(layers, draws, sizes, sens, bases):
        w = reweight(lay.module.weight, d, m)
        if variant == "plusplus":
            w = _amplify(lay, s, base, w, d.index.shape[1], trials, seen[lay.name], gen)
        weights[lay.name] = w
        masks[lay.name] = w != 0
    kept = sum(int(mk.sum()) for mk in masks.values())
    removed = {n: int(v.sum()) for n, v in dead.items() if int(v.sum())}
    return Sparsified(weights, masks, budget, kept, layers, removed, notes)


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


def _amplify(lay: Layer, s, base, first, pool: int, trials: int, x: torch.Tensor, gen) -> torch.Tensor:
    """CoreNet++: the best of ``trials`` independent draws of the layer, each keeping as many weights as
    the first, by the relative error of the layer's output on the held-out inputs ``x``."""
    count = int((first != 0).sum())
    exact = _output(lay, lay.module.weight.detach(), x)
    best, best_err = first, _error(_output(lay, first, x), exact)
    for _ in range(trials - 1):
        d = draw(rows_of(lay.module), s, pool, gen)
        (m,), _ = allocate([(d, base)], count)
        w = reweight(lay.module.weight, d, m)
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

"""Importance sampling of a layer's weights: per neuron and sign set, draws with replacement from
``q_j = s_j / sum s``, and each kept weight reweighted to ``w_j * count_j / (m q_j)``, so that the
neuron's pre-activation is unbiased for every input.

The draws of one (neuron, sign) row are a fixed stream: ``m`` samples are its first ``m`` draws. The
weights kept therefore only grow with ``m``, and a budget can be met exactly: :func:`allocate` ranks
every draw that brings a new weight into its row by the common scale at which the row's sample
size reaches it, and takes the first ``budget`` of them.

Example: ``draw(weight, s, pool=64, generator=torch.Generator().manual_seed(0))`` then
``reweight(weight, d, m)`` (see :func:`draw`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .kernel import compiled_draws, draw_rows, rows_of_sets, sampled_rows

__all__ = ["Draws", "distribution", "draw", "reweight", "allocate", "sample", "sample_counts"]


@dataclass
class Draws:
    """A pool of draws for every (neuron, sign) row of one layer (``2 * outputs`` rows: positive, then negative)."""

    index: torch.Tensor  # (rows, pool) int64: the weight drawn at each step
    chance: torch.Tensor  # (rows, pool) float64: the probability of the weight drawn at each step
    new: torch.Tensor  # (rows, pool) bool: the draw brings a weight not drawn before in its row
    mass: torch.Tensor  # (rows,): the row's total sensitivity (0: nothing to sample)
    reachable: torch.Tensor  # (rows,): how many weights the row can draw (those of positive sensitivity)

    @property
    def rows(self) -> int:
        return self.index.shape[0]


def distribution(weight: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``q``: each (neuron, sign) row's sampling distribution (``2 * outputs`` x inputs-per-neuron).

    >>> distribution(torch.tensor([[2.0, -1.0, 1.0]]), torch.tensor([[0.5, 1.0, 0.5]])).tolist()
    [[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]]
    """
    share = rows_of_sets(weight.detach().reshape(weight.shape[0], -1), s.reshape(weight.shape[0], -1))
    mass = share.sum(1, keepdim=True)
    return torch.where(mass > 0, share / mass.clamp(min=1e-300), 0.0)


def draw(weight: torch.Tensor, s: torch.Tensor, pool: int, generator: torch.Generator) -> Draws:
    """``pool`` draws with replacement for every (neuron, sign) row of ``weight`` from its sensitivities ``s``.

    >>> d = draw(torch.tensor([[2.0, -1.0, 1.0]]), torch.tensor([[0.5, 1.0, 0.5]]), 4, torch.Generator().manual_seed(0))
    >>> d.rows, d.mass.tolist(), d.index[1].tolist()
    (2, [1.0, 1.0], [1, 1, 1, 1])
    """
    w = weight.detach().reshape(weight.shape[0], -1)
    u = torch.rand(2 * w.shape[0], pool, generator=generator, dtype=torch.float64)
    return Draws(*draw_rows(w, s.reshape(w.shape).to(torch.float64), u))


def reweight(weight: torch.Tensor, d: Draws, m: torch.Tensor) -> torch.Tensor:
    """The sampled weight: each row's first ``m[row]`` draws, counted and reweighted (``weight``'s shape).

    Each draw of weight ``j`` adds ``w_j / (m q_j)``, so a weight drawn ``count_j`` times becomes
    ``w_j count_j / (m q_j)``."""
    w = weight.detach().reshape(weight.shape[0], -1)
    return sampled_rows(w, d.index, d.chance, m, d.mass).reshape(weight.shape)


def allocate(
    layers: list[tuple[Draws, torch.Tensor]], budget: int, fast: bool = True
) -> tuple[list[torch.Tensor], list[int]]:
    """Sample sizes for every row of every layer so that exactly ``budget`` distinct weights are kept
    (or every weight that can be drawn, when that is fewer), and per layer 0, or the longer pool it
    needs when its pool was too short.

    Row ``r`` with base ``b_r`` (its share of the samples, from the error budget) takes
    ``m_r = ceil(lam * b_r)`` draws, one ``lam`` for all rows. A draw at step ``t`` (from 1) that brings
    a new weight is inside once ``lam > (t - 1) / b_r``; the ``budget`` new-weight draws with the smallest
    such thresholds are taken. Each row then takes its draws below the last threshold taken (more
    samples of weights it keeps anyway) and at least up to its last new weight. When some row would
    need more draws than its pool holds while it still has weights it never drew, that layer's pool was
    too short: draw it again with a longer one. (The scale found with a short pool is too large, since
    the short rows could not take their share: the pool it asks for is long enough.)
    """
    run = compiled_draws() if fast else None
    if run is not None and all(d.new.device.type == "cpu" for d, _ in layers):
        return run.allocate(
            [d.new for d, _ in layers], [b for _, b in layers], [d.reachable for d, _ in layers], budget
        )
    keys, owners, steps, offset = [], [], [], 0
    for d, base in layers:
        r, t = torch.nonzero(d.new, as_tuple=True)
        b = base.to(torch.float64)[r]
        keys.append(torch.where(b > 0, t.to(torch.float64) / b.clamp(min=1e-300), float("inf")))
        owners.append(r + offset)
        steps.append(t + 1)
        offset += d.rows
    key, owner, step = torch.cat(keys), torch.cat(owners), torch.cat(steps)
    take = _smallest(key, budget)
    last = float(key[take].max()) if len(take) else 0.0
    wants, short = [], []
    for d, base in layers:
        pool = d.index.shape[1]
        want = torch.ceil(last * base.to(torch.float64)).to(torch.int64)
        over = (want > pool) & (d.new.sum(1) < d.reachable)
        short.append(int(want[over].max()) if bool(over.any()) else 0)
        wants.append(want.clamp(max=pool))
    # each row: at least up to its last new weight taken
    flat = torch.cat(wants).scatter_reduce_(0, owner[take], step[take], reduce="amax")
    return list(flat.split([d.rows for d, _ in layers])), short


def _smallest(key: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the ``k`` smallest finite keys, ties taken in order of position (a stable sort's
    first ``k``), found by selection rather than a full sort."""
    finite = torch.isfinite(key)
    k = min(max(0, k), int(finite.sum()))
    if k == 0:
        return torch.zeros(0, dtype=torch.int64)
    cut = torch.kthvalue(torch.where(finite, key, torch.inf), k).values
    below = torch.nonzero(key < cut).flatten()
    at = torch.nonzero(key == cut).flatten()[: k - len(below)]
    return torch.cat([below, at])


def sample_counts(weight: torch.Tensor, s: torch.Tensor, m: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The sampled layer for sample sizes ``m`` of any size (``2 * outputs`` entries, float64, up to
    about 1e300): each row's counts are drawn at once from their multinomial distribution, as a chain
    of binomials over the row's weights, instead of draw by draw.

    >>> w = torch.tensor([[2.0, -1.0, 1.0]])
    >>> sample_counts(w, torch.tensor([[0.5, 1.0, 0.5]]), torch.tensor([1e12, 3.0]), torch.Generator().manual_seed(0))
    tensor([[ 2.0000, -1.0000,  1.0000]])
    """
    w = weight.detach().reshape(weight.shape[0], -1)
    q = distribution(w, s)
    m = m.to(torch.float64)
    # the chance of weight j given that the draw fell on j or a later weight: the tail sums of q, so that
    # the last weight of a row takes what is left, exactly
    tail = q.flip(1).cumsum(1).flip(1)
    left, counts = m.clone(), torch.zeros_like(q)
    for j in range(q.shape[1]):
        p = torch.where(tail[:, j] > 0, q[:, j] / tail[:, j].clamp(min=1e-300), 0.0).clamp(0.0, 1.0)
        counts[:, j] = torch.binomial(left, p, generator=generator)
        left -= counts[:, j]
    scale = torch.where(counts > 0, counts / (m[:, None].clamp(min=1) * q.clamp(min=1e-300)), 0.0)
    out = w.shape[0]
    return (w.to(torch.float64) * (scale[:out] + scale[out:])).reshape(weight.shape).to(weight.dtype)


def sample(weight: torch.Tensor, s: torch.Tensor, m: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw of the sampled layer with ``m`` samples per (neuron, sign) row (``2 * outputs`` entries).

    >>> w = torch.tensor([[2.0, -1.0, 1.0]])
    >>> sample(w, torch.tensor([[0.5, 1.0, 0.5]]), torch.tensor([1000, 1]), torch.Generator().manual_seed(1))
    tensor([[ 1.9480, -1.0000,  1.0260]])
    """
    d = draw(weight, s, int(m.max()) if m.numel() else 0, generator)
    return reweight(weight, d, m)

"""Importance sampling of a layer's weights: per neuron and sign set, draws with replacement from
``q_j = s_j / sum s``, and each kept weight reweighted to ``w_j * count_j / (m q_j)``, so that the
neuron's pre-activation is unbiased for every input.

The draws of one (neuron, sign) row are a fixed stream: ``m`` samples are its first ``m`` draws. The
weights kept therefore only grow with ``m``, and a budget can be met exactly: :func:`allocate` ranks
every draw that brings a new weight into its row by the common scale at which the row's sample
size reaches it, and takes the first ``budget`` of them.

Example: ``draw(weight, s, pool=64, generator=torch.Generator().manual_seed(0))`` then
``reweight(weight, s, d, m)`` (see :func:`draw`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Draws", "draw", "reweight", "allocate", "sample"]


@dataclass
class Draws:
    """A pool of draws for every (neuron, sign) row of one layer (``2 * outputs`` rows: positive, then negative)."""

    index: torch.Tensor  # (rows, pool) int64: the weight drawn at each step
    q: torch.Tensor  # (rows, inputs-per-neuron): each row's sampling distribution (0 outside its sign set)
    mass: torch.Tensor  # (rows,): the row's total sensitivity (0: nothing to sample)
    new: torch.Tensor  # (rows, pool) bool: the draw brings a weight not drawn before in its row

    @property
    def rows(self) -> int:
        return self.index.shape[0]


def _rows(weight: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    w = weight.detach().reshape(weight.shape[0], -1)
    s = s.reshape(w.shape).to(torch.float64)
    return torch.cat([torch.where(w > 0, s, 0.0), torch.where(w < 0, s, 0.0)])


def draw(weight: torch.Tensor, s: torch.Tensor, pool: int, generator: torch.Generator) -> Draws:
    """``pool`` draws with replacement for every (neuron, sign) row of ``weight`` from its sensitivities ``s``.

    >>> w = torch.tensor([[2.0, -1.0, 1.0]])
    >>> d = draw(w, torch.tensor([[0.5, 1.0, 0.5]]), 4, torch.Generator().manual_seed(0))
    >>> d.rows, d.q.tolist()
    (2, [[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]])
    """
    sr = _rows(weight, s)
    mass = sr.sum(1)
    q = torch.where(mass[:, None] > 0, sr / mass.clamp(min=1e-300)[:, None], 0.0)
    live = mass > 0
    index = torch.zeros(sr.shape[0], pool, dtype=torch.int64)
    if bool(live.any()) and pool > 0:
        index[live] = torch.multinomial(q[live], pool, replacement=True, generator=generator)
    # a draw is new where it is the first draw of its weight in the row: the smallest step per (row, weight)
    steps = torch.arange(pool).expand_as(index)
    first = torch.full(sr.shape, pool, dtype=torch.int64).scatter_reduce_(1, index, steps, reduce="amin")
    new = (first.gather(1, index) == steps) & live[:, None]
    return Draws(index, q, mass, new)


def reweight(weight: torch.Tensor, d: Draws, m: torch.Tensor) -> torch.Tensor:
    """The sampled weight: each row's first ``m[row]`` draws, counted and reweighted (``weight``'s shape)."""
    w = weight.detach().reshape(weight.shape[0], -1).to(torch.float64)
    out = w.shape[0]
    m = m.to(torch.int64).clamp(min=0, max=d.index.shape[1])
    used = torch.arange(d.index.shape[1])[None, :] < m[:, None]
    counts = torch.zeros(d.q.shape, dtype=torch.float64).scatter_add_(1, d.index, used.to(torch.float64))
    scale = torch.where(counts > 0, counts / (m[:, None].clamp(min=1) * d.q.clamp(min=1e-300)), 0.0)
    both = torch.cat([w, w]) * scale
    return (both[:out] + both[out:]).reshape(weight.shape).to(weight.dtype)


def allocate(layers: list[tuple[Draws, torch.Tensor]], budget: int) -> tuple[list[torch.Tensor], bool]:
    """Sample sizes for every row of every layer so that exactly ``budget`` distinct weights are kept
    (or every weight that can be drawn, when that is fewer), and whether a pool was too short.

    Row ``r`` with base ``b_r`` (its share of the samples, from the error budget) takes
    ``m_r = ceil(lam * b_r)`` draws, one ``lam`` for all rows. A draw at step ``t`` (from 1) that brings
    a new weight is inside once ``lam > (t - 1) / b_r``; the ``budget`` new-weight draws with the smallest
    such thresholds are taken. Each row then takes its draws below the last threshold taken (more
    samples of weights it keeps anyway) and at least up to its last new weight. When some row would
    need more draws than its pool holds while it still has weights it never drew, the pool was too
    short: draw again with a longer one.
    """
    keys, owners, steps, offset = [], [], [], 0
    for d, base in layers:
        r, t = torch.nonzero(d.new, as_tuple=True)
        b = base.to(torch.float64)[r]
        keys.append(torch.where(b > 0, t.to(torch.float64) / b.clamp(min=1e-300), float("inf")))
        owners.append(r + offset)
        steps.append(t + 1)
        offset += d.rows
    key, owner, step = torch.cat(keys), torch.cat(owners), torch.cat(steps)
    take = torch.argsort(key, stable=True)[: max(0, budget)]
    take = take[torch.isfinite(key[take])]
    last = float(key[take[-1]]) if len(take) else 0.0
    wants, short = [], False
    for d, base in layers:
        pool = d.index.shape[1]
        want = torch.ceil(last * base.to(torch.float64)).to(torch.int64)
        reachable = (d.q > 0).sum(1)
        short = short or bool(((want > pool) & (d.new.sum(1) < reachable)).any())
        wants.append(want.clamp(max=pool))
    # each row: at least up to its last new weight taken
    flat = torch.cat(wants).scatter_reduce_(0, owner[take], step[take], reduce="amax")
    return list(flat.split([d.rows for d, _ in layers])), short


def sample(weight: torch.Tensor, s: torch.Tensor, m: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw of the sampled layer with ``m`` samples per (neuron, sign) row (``2 * outputs`` entries).

    >>> w = torch.tensor([[2.0, -1.0, 1.0]])
    >>> sample(w, torch.tensor([[0.5, 1.0, 0.5]]), torch.tensor([1000, 1]), torch.Generator().manual_seed(1))
    tensor([[ 1.9480, -1.0000,  1.0260]])
    """
    d = draw(weight, s, int(m.max()) if m.numel() else 0, generator)
    return reweight(weight, d, m)

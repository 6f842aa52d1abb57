"""CoreNet's loops, compiled by numba when it is installed (the ``fast`` extra) and run by torch
otherwise, with the same numbers either way (tests/prune/test_corenet_kernel.py checks it bit for bit).

- :func:`max_product`, the heart of the sensitivities: for every weight ``(i, j)`` of a layer,
  ``top[i, j] = max(top[i, j], max over rows x of a[x, j] * r[x, i])``, where ``r`` is the inverse of
  neuron ``i``'s sum over the sign set that weight ``(i, j)`` belongs to. It costs as many
  multiply-and-compare steps as the layer's forward pass costs multiply-adds, but no BLAS routine
  computes it. Compiled, it is one fused pass, each weight against its own sign's inverse only, one
  neuron per thread; torch computes both signs and selects. A product of two float32 values and a max
  are exact, so the order does not matter.
- :func:`draw_rows`: where each draw falls in its row's distribution function (a binary search without
  branches, a row's draws in lock step), and whether it is the first draw of its weight in the row.
- :func:`sampled_rows`: the reweighted weight, summed in float64 in draw order.
- the allocation of :func:`.sampling.allocate`: the budget's cut among the thresholds of new draws.

Example: ``max_product(top, a, totals, w > 0)`` (see :func:`max_product`).
"""

from __future__ import annotations

import functools
import os
from types import SimpleNamespace

import torch

__all__ = ["max_product", "sensitivity_of", "draw_rows", "sampled_rows", "rows_of_sets", "compiled", "compiled_draws"]

_CHUNK_BYTES = 32 << 20  # one (rows x outputs x inputs-per-neuron) block of the torch fallback
_BIG = 1 << 16  # weights per layer above which the fallback runs one row at a time (stays in cache)
_TYPES = (torch.float32, torch.float64)  # what the compiled kernels read
_TINY = float(torch.finfo(torch.float32).tiny)  # sums are floored here before their inverse: finite


@functools.cache
def compiled() -> SimpleNamespace | None:
    """The numba versions of :func:`max_product` and :func:`sensitivity_of`, or None when numba is
    missing or ``CONNECTOME_NO_NUMBA`` is set."""
    if os.environ.get("CONNECTOME_NO_NUMBA"):
        return None
    try:
        import numba
        import numpy as np
    except ImportError:
        return None

    @numba.njit(parallel=True, cache=True)
    def kernel(top, a, totals, positive):  # pragma: no cover - compiled
        rows, width = a.shape
        out, one, tiny = top.shape[0], np.float32(1.0), np.float32(_TINY)
        for i in numba.prange(out):
            t, pm = top[i], positive[i]
            for x in range(rows):
                tp, tn = totals[x, i], totals[x, out + i]
                if tp == 0 and tn == 0:
                    continue
                p = one / max(tp, tiny) if tp != 0 else np.float32(0.0)  # float32, as torch's reciprocal
                n = one / max(tn, tiny) if tn != 0 else np.float32(0.0)
                ax = a[x]
                for j in range(width):
                    v = ax[j] * (p if pm[j] else n)
                    t[j] = v if v > t[j] else t[j]

    @numba.njit(cache=True)
    def scale(w, top, out):  # pragma: no cover - compiled
        one = np.float32(1.0)
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                out[i, j] = min(abs(w[i, j]) * top[i, j], one) if w[i, j] != 0 else 0.0

    def run(top: torch.Tensor, a: torch.Tensor, totals: torch.Tensor, positive: torch.Tensor) -> None:
        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
        # the signs as bytes: a select on bytes vectorizes better than one on bools
        kernel(top.numpy(), a.contiguous().numpy(), totals.contiguous().numpy(), positive.numpy().view(np.uint8))

    def sensitivity(w: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        out = torch.empty(w.shape, dtype=torch.float64)
        scale(w.contiguous().numpy(), top.contiguous().numpy(), out.numpy())
        return out

    return SimpleNamespace(max_product=run, sensitivity=sensitivity)


def sensitivity_of(w: torch.Tensor, top: torch.Tensor, fast: bool = True) -> torch.Tensor:
    """``min(|w| top, 1)`` in float32, as float64, and 0 where ``w`` is 0 (whatever ``top`` holds there).

    >>> sensitivity_of(torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.25, float("inf"), 3.0]]))
    tensor([[0.5000, 0.0000, 1.0000]], dtype=torch.float64)
    """
    run = compiled() if fast else None
    if run is not None and w.device.type == "cpu" and w.dtype == top.dtype == torch.float32:
        return run.sensitivity(w, top)
    return torch.where(w != 0, w.abs() * top, 0.0).clamp(max=1.0).double()


def max_product(
    top: torch.Tensor, a: torch.Tensor, totals: torch.Tensor, positive: torch.Tensor, fast: bool = True
) -> None:
    """Raise ``top`` (outputs x width, float32, in place) to the max over the rows of ``a`` (rows x width)
    of ``a[x, j] * r[x, i]``, where ``r`` is the inverse of ``totals[x, i]`` where ``positive[i, j]``, else
    of ``totals[x, outputs + i]`` (``totals``: rows x 2 outputs, never negative; the inverse of 0 is 0).

    >>> top = torch.zeros(1, 2)
    >>> max_product(top, torch.tensor([[1.0, 2.0], [3.0, 1.0]]), torch.tensor([[2.0, 1.0], [10.0, 1.0]]),
    ...             torch.tensor([[True, False]]))
    >>> top
    tensor([[0.5000, 2.0000]])
    """
    run = compiled() if fast else None
    if run is not None and top.device.type == "cpu" and top.dtype == a.dtype == totals.dtype == torch.float32:
        run.max_product(top, a, totals, positive)
        return
    out, width = top.shape
    inv = totals.clamp(min=_TINY).reciprocal_().masked_fill_(totals == 0, 0.0)
    rp, rn = inv[:, :out], inv[:, out:]
    if out * width >= _BIG:  # each sign's running max in its own buffer, merged once at the end
        buf, tp, tn = torch.empty_like(top), torch.zeros_like(top), torch.zeros_like(top)
        for x in range(a.shape[0]):
            torch.maximum(tp, torch.mul(rp[x][:, None], a[x][None, :], out=buf), out=tp)
            torch.maximum(tn, torch.mul(rn[x][:, None], a[x][None, :], out=buf), out=tn)
        torch.maximum(top, torch.where(positive, tp, tn), out=top)
        return
    rows = max(1, _CHUNK_BYTES // max(1, 2 * out * width * a.element_size()))
    for start in range(0, a.shape[0], rows):
        part = a[start : start + rows][:, None, :]
        p = (rp[start : start + rows][:, :, None] * part).amax(0)
        n = (rn[start : start + rows][:, :, None] * part).amax(0)
        torch.maximum(top, torch.where(positive, p, n), out=top)


@functools.cache
def compiled_draws() -> SimpleNamespace | None:
    """The numba versions of :func:`draw_rows`, :func:`sampled_rows` and of
    :func:`.sampling.allocate`, or None (as :func:`compiled`)."""
    if compiled() is None:
        return None
    import numba
    import numpy as np

    @numba.njit(cache=True)
    def kernel(s, w, u, index, chance, new, mass, reachable):  # pragma: no cover - compiled
        out, width = s.shape
        pool = u.shape[1]
        cdf, seen, x = np.empty(width), np.full(width, -1, np.int64), np.empty(pool)
        for r in range(u.shape[0]):
            i, sign = r % out, 1.0 if r < out else -1.0
            total, count = 0.0, 0
            for j in range(width):
                v = s[i, j] * (w[i, j] * sign > 0)  # branch-free: the signs of a row are random
                total += v
                cdf[j] = total
                count += v > 0
            mass[r], reachable[r] = total, count
            top = np.nextafter(total, 0.0)
            for t in range(pool):
                x[t] = min(u[r, t] * total, top)
                index[r, t] = 0
            # the first j with cdf[j] > x: a binary search without branches, all of the row's draws in
            # lock step so that their chains of loads overlap
            n = width
            while n > 1:
                half = n >> 1
                for t in range(pool):
                    index[r, t] += half * (cdf[index[r, t] + half - 1] <= x[t])
                n -= half
            for t in range(pool):
                j = min(index[r, t] + (cdf[index[r, t]] <= x[t]), width - 1)
                index[r, t] = j
                chance[r, t] = s[i, j] / total if total > 0 else 0.0
                new[r, t] = total > 0 and seen[j] != r
                seen[j] = r

    @numba.njit(cache=True)
    def reweigh(w, index, chance, m, mass, out):  # pragma: no cover - compiled
        total = np.zeros(w.shape[1])  # a row's sums in float64, cast once: what torch's path computes
        for r in range(index.shape[0]):
            if mass[r] > 0:
                i = r % w.shape[0]
                for t in range(m[r]):
                    total[index[r, t]] += w[i, index[r, t]] / (m[r] * chance[r, t])
                for t in range(m[r]):
                    j = index[r, t]
                    out[i, j] = total[j]
                for t in range(m[r]):
                    total[index[r, t]] = 0.0

    @numba.njit(cache=True)
    def choose(new, pools, rows, base, reachable, budget, sizes, short):  # pragma: no cover - compiled
        n = 0
        for v in new:
            n += v
        key, owner, step = np.empty(n), np.empty(n, np.int64), np.empty(n, np.int64)
        at, k, row0, finite = 0, 0, 0, 0
        for layer in range(len(pools)):
            for r in range(rows[layer]):
                b = base[row0 + r]
                for t in range(pools[layer]):
                    if new[k]:
                        key[at] = t / b if b > 0 else np.inf
                        finite += b > 0
                        owner[at], step[at] = row0 + r, t + 1
                        at += 1
                    k += 1
            row0 += rows[layer]
        take = min(max(0, budget), finite)
        last = np.partition(key, take - 1)[take - 1] if take > 0 else 0.0
        k, row0 = 0, 0
        for layer in range(len(pools)):
            pool = pools[layer]
            for r in range(row0, row0 + rows[layer]):
                fresh = 0
                for _ in range(pool):
                    fresh += new[k]
                    k += 1
                want = np.int64(np.ceil(last * base[r]))
                if want > pool and fresh < reachable[r]:
                    short[layer] = max(short[layer], want)
                sizes[r] = min(want, pool)
            row0 += rows[layer]
        if take == 0:
            return
        ties = take
        for i in range(n):
            ties -= key[i] < last
        for i in range(n):  # the taken draws: every key below the cut, and the first of those at it
            if key[i] < last or (key[i] == last and ties > 0):
                ties -= key[i] == last
                sizes[owner[i]] = max(sizes[owner[i]], step[i])

    def draws(s: torch.Tensor, w: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, ...]:
        rows, pool = u.shape
        index, chance = torch.empty(rows, pool, dtype=torch.int64), torch.empty(rows, pool, dtype=torch.float64)
        new, mass = torch.empty(rows, pool, dtype=torch.bool), torch.empty(rows, dtype=torch.float64)
        reachable = torch.empty(rows, dtype=torch.int64)
        kernel(
            s.contiguous().numpy(),
            w.contiguous().numpy(),
            u.contiguous().numpy(),
            index.numpy(),
            chance.numpy(),
            new.numpy(),
            mass.numpy(),
            reachable.numpy(),
        )
        return index, chance, new, mass, reachable

    def sampled(w: torch.Tensor, index: torch.Tensor, chance: torch.Tensor, m: torch.Tensor, mass: torch.Tensor):
        out = torch.zeros(w.shape, dtype=w.dtype)
        reweigh(
            w.contiguous().numpy(),
            index.contiguous().numpy(),
            chance.contiguous().numpy(),
            m.contiguous().numpy(),
            mass.contiguous().numpy(),
            out.numpy(),
        )
        return out

    def allocate(news: list[torch.Tensor], bases: list[torch.Tensor], reachable: list[torch.Tensor], budget: int):
        rows = [n.shape[0] for n in news]
        sizes, short = torch.zeros(sum(rows), dtype=torch.int64), np.zeros(len(news), np.int64)
        choose(
            torch.cat([n.reshape(-1) for n in news]).numpy(),
            np.array([n.shape[1] for n in news], np.int64),
            np.array(rows, np.int64),
            torch.cat(bases).to(torch.float64).numpy(),
            torch.cat(reachable).numpy(),
            budget,
            sizes.numpy(),
            short,
        )
        return list(sizes.split(rows)), [int(v) for v in short]

    return SimpleNamespace(draws=draws, sampled=sampled, allocate=allocate)


def rows_of_sets(w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The sensitivities ``s`` as (neuron, sign) rows: ``2 * outputs`` rows, positive sets first, 0 outside the set."""
    s = s.to(torch.float64)
    return torch.cat([torch.where(w > 0, s, 0.0), torch.where(w < 0, s, 0.0)])


def draw_rows(w: torch.Tensor, s: torch.Tensor, u: torch.Tensor, fast: bool = True) -> tuple[torch.Tensor, ...]:
    """Draws by the inverse distribution function: for each (neuron, sign) row ``r`` of weight ``w``
    (outputs x width) with sensitivities ``s`` (float64), and each uniform ``u[r, t]`` in [0, 1), the
    weight drawn (the first ``j`` whose cumulative sensitivity exceeds ``u`` times the row's total),
    its probability, and whether no earlier draw of the row fell on it; then each row's total and how
    many weights it can draw. ``u`` stays below the total, so a draw never falls past the row's last
    weight of positive sensitivity.

    >>> w, s = torch.tensor([[1.0, -1.0, 2.0]]), torch.tensor([[0.5, 1.0, 0.5]], dtype=torch.float64)
    >>> index, chance, new, mass, reachable = draw_rows(w, s, torch.tensor([[0.7, 0.2, 0.9], [0.5, 0.1, 0.0]],
    ...                                                                     dtype=torch.float64))
    >>> index.tolist(), chance.tolist(), mass.tolist()
    ([[2, 0, 2], [1, 1, 1]], [[0.5, 0.5, 0.5], [1.0, 1.0, 1.0]], [1.0, 1.0])
    >>> new.tolist()
    [[True, True, False], [True, False, False]]
    """
    run = compiled_draws() if fast else None
    if run is not None and w.device.type == "cpu" and s.dtype == u.dtype == torch.float64 and w.dtype in _TYPES:
        return run.draws(s, w, u)
    share = rows_of_sets(w, s)
    cdf = share.cumsum(1)
    mass = cdf[:, -1].clone()
    x = torch.minimum(u * mass[:, None], torch.nextafter(mass, torch.zeros_like(mass))[:, None])
    index = torch.searchsorted(cdf, x, right=True).clamp_(max=cdf.shape[1] - 1)
    chance = share.gather(1, index) / torch.where(mass > 0, mass, 1.0)[:, None]
    steps = torch.arange(u.shape[1]).expand_as(index)
    first = torch.full(cdf.shape, u.shape[1], dtype=torch.int64).scatter_reduce_(1, index, steps, reduce="amin")
    new = (first.gather(1, index) == steps) & (mass > 0)[:, None]
    return index, chance, new, mass, (share > 0).sum(1)


def sampled_rows(
    w: torch.Tensor, index: torch.Tensor, chance: torch.Tensor, m: torch.Tensor, mass: torch.Tensor, fast: bool = True
) -> torch.Tensor:
    """The sampled weight (``w``'s shape and type): the first ``m[r]`` draws of each live (neuron, sign)
    row ``r`` each add ``w / (m[r] chance)`` (in float64, in draw order) to the weight they drew.

    >>> w = torch.tensor([[2.0, -1.0]])
    >>> sampled_rows(w, torch.tensor([[0, 0], [1, 1]]), torch.tensor([[0.5, 0.5], [1.0, 1.0]], dtype=torch.float64),
    ...              torch.tensor([2, 1]), torch.tensor([1.0, 1.0], dtype=torch.float64))
    tensor([[ 4., -1.]])
    """
    m = m.to(torch.int64).clamp(min=0, max=index.shape[1])
    run = compiled_draws() if fast else None
    if run is not None and w.device.type == "cpu" and w.dtype in _TYPES:
        return run.sampled(w, index, chance, m, mass)
    out, width = w.shape
    used = (torch.arange(index.shape[1])[None, :] < m[:, None]) & (mass > 0)[:, None]
    row, _ = torch.nonzero(used, as_tuple=True)
    neuron, col = row % out, index[used]
    value = w[neuron, col].to(torch.float64) / (m[row] * chance[used])
    flat = torch.zeros(out * width, dtype=torch.float64).index_put_((neuron * width + col,), value, accumulate=True)
    return flat.reshape(w.shape).to(w.dtype)

"""Mixture-of-experts layers: counts of tokens per expert, and expert weights stacked in 3-D parameters,
each token row multiplied by the matrix of the expert the router picked for it.

``histc``, ``bincount``, ``histogram``: every bin may count every element, all to all, which is exact for
a count (a supported op, unlike a fallback).

An *expert product* multiplies rows by one expert's matrix each: ``grouped_mm(x, W, offs)`` (rows sorted by
expert, ``offs`` ends each expert's group: ``torch._grouped_mm``, ``F.grouped_mm``, transformers'
``grouped_mm_fallback``) or ``bmm(W[idx], x)`` (transformers' batched_mm: one matrix per row). Which
expert a row meets is data, so any row may meet any expert; features stay exact: ``W[e, i, o]`` is
effective where input feature ``i`` is alive at some row and output ``o`` alive to the outputs at some row.

Two expert products under one routing (the same ``offs`` or ``idx`` node) with a row-wise computation
between them (up-projection, activation and gate, down-projection) are an MLP per expert: a row that
meets expert ``e`` in the first meets ``e`` in the second. The second product then walks the middle once
per expert (:class:`ExpertMLP`), so a unit of one expert that is dead (its gate and up rows zero) makes
that expert's down column ineffective whatever the other experts do, and back. Row-wise is checked on
the real computation: perturbing some rows must leave the others bit-identical. The rules that find
these products and pairs are in :mod:`.moe`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import fx

from ..status import Status, any_alive, merge
from .base import Ctx, Op, Weight, rule
from .fallback import Fallback

aten = torch.ops.aten

__all__ = ["Counts", "Side", "ExpertProduct", "ExpertMLP"]


class Counts(Fallback):
    """A histogram of its inputs: all to all, exact for counts (so not listed as unsupported)."""

    supported = True


@rule(
    torch.histc,
    ".histc",
    aten.histc,
    torch.bincount,
    ".bincount",
    aten.bincount,
    torch.histogram,
    ".histogram",
    aten.histogram,
    torch.histogramdd,
)
def counts(ctx: Ctx) -> Op:
    return Counts(ctx.out, [ctx.val(a) for a in ctx.tensor_args])


@dataclass
class Side:
    """One expert product in a canonical layout: rows ``(S, ..., I) @ m[e] (I, O)``.

    ``xt``: the activation operand (and the output) is the canonical one with its last two dims swapped;
    ``mt``: the weight operand's mask is ``m`` with its last two dims swapped; ``per_row``: the routing
    input says each row's expert (``idx``), else it is global (``offs``).
    """

    weight: Weight
    m: np.ndarray  # (E, I, O) bool
    xt: bool
    mt: bool
    per_row: bool

    @staticmethod
    def of(weight: Weight, xt: bool, mt: bool, per_row: bool) -> Side:
        m = weight.mask.transpose(-1, -2) if mt else weight.mask
        return Side(weight, np.ascontiguousarray(m.numpy(), dtype=bool), xt, mt, per_row)

    def f(self, e: int | None = None) -> np.ndarray:
        """Expert ``e``'s mask as floats (None: any expert's), made when needed: one expert at a time."""
        return (self.m[e] if e is not None else np.asarray(self.m.any(0))).astype(np.float32)

    # numpy, not torch: these products are small, and torch's thread pool costs more than they do
    def x(self, s: Status) -> tuple[np.ndarray, np.ndarray]:
        """Alive and may-be-nonzero of the activation, canonical, as floats."""
        a = s.full().astype(np.float32)
        a = np.swapaxes(a, -1, -2) if self.xt else a
        return a, (a if s.zero else np.ones_like(a))

    def rows(self, c: Status | None, n: int) -> np.ndarray:
        if c is None or not c.any():
            return np.zeros(n, bool)
        return c.full().reshape(n) if self.per_row else np.ones(n, bool)

    def apply(self, xa: np.ndarray, xm: np.ndarray, rows: np.ndarray, m: np.ndarray) -> np.ndarray:
        out = (xa @ m) > 0
        if rows.any():  # a row that may meet another expert varies wherever its product may be nonzero
            out |= rows.reshape((-1,) + (1,) * (xa.ndim - 1)) & ((xm @ m) > 0)
        return out

    def status(self, out: np.ndarray, zero: bool) -> Status:
        out = np.swapaxes(out, -1, -2) if self.xt else out
        return Status.from_full(np.ascontiguousarray(out), -1).with_zero(zero)

    def grad(self, g: Status) -> np.ndarray:
        t = g.full().astype(np.float32)
        return np.swapaxes(t, -1, -2) if self.xt else t

    def eff(self, xa: np.ndarray, g: np.ndarray, e: int | None = None) -> torch.Tensor:
        """Effective entries of expert ``e``'s matrix (all experts if None), as the operand's mask."""
        i, o = self.m.shape[-2:]
        reach = (xa.reshape(-1, i).T @ g.reshape(-1, o)) > 0
        eff = (self.m if e is None else self.m[e]) & reach
        return torch.from_numpy(np.ascontiguousarray(np.swapaxes(eff, -1, -2) if self.mt else eff))


def _ctrl_grad(side: Side, c: Status, g: np.ndarray, xm: np.ndarray, m: np.ndarray) -> Status:
    """Where the routing input matters: rows whose alive-to-output product may be nonzero."""
    hit = ((g > 0) & ((xm @ m) > 0)).reshape(g.shape[0], -1).any(1)
    if side.per_row:
        return Status.from_full(hit.reshape(c.shape), -1 if c.shape else 0)
    return Status.uniform(c.shape, -1 if c.shape else 0, bool(hit.any()))


class ExpertProduct(Op):
    """Rows times the matrix of an expert the data picks, any expert for any row. Inputs: ``x``, routing.

    With ``owns`` False (the first product of an :class:`ExpertMLP`) it reports no weight: the pair does.
    """

    multi = True
    couples = True

    def __init__(self, side: Side, owns: bool = True):
        self.side = side
        self.weights = [side.weight] if owns else []
        self.many = side.f()

    def forward(self, ins: list[Status]) -> Status:
        x, c = ins[0], ins[1] if len(ins) > 1 else None
        xa, xm = self.side.x(x)
        return self.side.status(self.side.apply(xa, xm, self.side.rows(c, xa.shape[0]), self.many), x.zero)

    def backward(self, ins: list[Status], out: Status, grad: Status) -> list[Status | None]:
        x = ins[0]
        g = self.side.grad(grad)
        gx = self.side.status((g @ self.many.T) > 0, True)
        res: list[Status | None] = [gx.reduce_to(x.shape) if gx.shape != x.shape else gx]
        if len(ins) > 1:
            res.append(_ctrl_grad(self.side, ins[1], g, self.side.x(x)[1], self.many))
        return res

    def effective(self, ins: list[Status], grad: Any) -> dict[str, torch.Tensor]:
        done = self.unreached(grad)  # answers for a None grad
        if done is not None:
            return done
        eff = self.side.eff(self.side.x(ins[0])[0], self.side.grad(grad))
        return {self.side.weight.name: eff & self.side.weight.mask}


class ExpertMLP(Op):
    """Two expert products under one routing with a row-wise middle, walked once per expert.

    Inputs: the first product's activation ``x``, the second's (``h``), the routing. ``chain`` holds the
    middle's (node, op, argument nodes) in graph order, from the first product's node to ``h``'s.
    """

    multi = True
    couples = True

    def __init__(self, first: Side, second: Side, p1: fx.Node, h: fx.Node, chain: list, consts: dict):
        self.first, self.second, self.p1, self.h, self.chain, self.consts = first, second, p1, h, chain, consts
        self.weights = [first.weight, second.weight]
        self.many = second.f()

    def _walk(self, ins: list[Status]) -> tuple[np.ndarray, list[dict]]:
        x, c = ins[0], ins[2] if len(ins) > 2 else None
        xa, xm = self.first.x(x)
        rows = self.first.rows(c, xa.shape[0])
        runs = []
        for e in range(self.first.m.shape[0]):
            vals: dict = {self.p1: self.first.status(self.first.apply(xa, xm, rows, self.first.f(e)), x.zero)}
            for node, op, args in self.chain:
                vals[node] = op.forward([vals[a] if a in vals else self.consts[a] for a in args])
            runs.append(vals)
        return xa, runs

    def forward(self, ins: list[Status]) -> Status:
        _, runs = self._walk(ins)
        c = ins[2] if len(ins) > 2 else None
        out: Any = None
        zero = True
        for e, vals in enumerate(runs):
            h = vals[self.h]
            ha, hm = self.second.x(h)
            o = self.second.apply(ha, hm, self.second.rows(c, ha.shape[0]), self.second.f(e))
            out = o if out is None else out | o
            zero = zero and h.zero
        return self.second.status(out, zero)

    def backward(self, ins: list[Status], out: Status, grad: Status) -> list[Status | None]:
        h = ins[1]
        g = self.second.grad(grad)
        gh = self.second.status((g @ self.many.T) > 0, True)
        res: list[Status | None] = [None, gh.reduce_to(h.shape) if gh.shape != h.shape else gh]
        if len(ins) > 2:
            res.append(_ctrl_grad(self.second, ins[2], g, self.second.x(h)[1], self.many))
        return res

    def effective(self, ins: list[Status], grad: Any) -> dict[str, torch.Tensor]:
        done = self.unreached(grad)  # answers for a None grad
        if done is not None:
            return done
        xa, runs = self._walk(ins)
        g = self.second.grad(grad)
        eff1 = torch.zeros_like(self.first.weight.mask)
        eff2 = torch.zeros_like(self.second.weight.mask)
        for e, vals in enumerate(runs):
            h = vals[self.h]
            ha = self.second.x(h)[0]
            eff2[e] |= self.second.eff(ha, g, e)
            grads = {self.h: self.second.status((g @ self.second.f(e).T) > 0, True)}
            for node, op, args in reversed(self.chain):
                gr = grads.get(node)
                if not any_alive(gr):
                    continue
                for a, part in zip(
                    args, op.backward([vals[a] if a in vals else self.consts[a] for a in args], vals[node], gr)
                ):
                    if a in vals and part is not None:
                        grads[a] = merge(grads.get(a), part)
            ga = grads.get(self.p1)
            if isinstance(ga, Status) and ga.any():
                eff1[e] |= self.first.eff(xa, self.first.grad(ga), e)
        return {
            self.first.weight.name: eff1 & self.first.weight.mask,
            self.second.weight.name: eff2 & self.second.weight.mask,
        }

"""Embeddings: a lookup is a linear layer from a one-hot vocabulary, so row ``v`` of the table can reach
feature ``d`` wherever the ids are alive; which rows the data will pick is not known, so every row may."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from ..status import Status
from .base import Ctx, Op, Weight, rule

aten = torch.ops.aten


class Lookup(Op):
    def __init__(self, weight: Weight | None, mask: torch.Tensor, ids_shape: tuple, out_shape: tuple):
        self.weights = [weight] if weight is not None else []
        self.mask, self.ids_shape, self.out_shape = mask, ids_shape, out_shape
        red = weight.reduced if weight is not None and mask is weight.mask and mask.dim() == 2 else None
        # features some row reaches; taken from the read when it was (a lazily read table is a broadcast view)
        self.col = red.cols if red is not None else mask.any(0).numpy()
        self.out_cdim = len(out_shape) - 1

    def forward(self, ins: list[Status]) -> Status:
        ids = ins[0].full().reshape(1, -1)
        if not ids.any():
            return Status.uniform(self.out_shape, -1, False)
        idx = np.where(self.col, 0, -1)
        return Status.from_table(ids, idx, self.out_shape, len(self.out_shape) - 1)

    def backward(self, ins: list[Status], out: Status, grad: Status) -> list[Status | None]:
        g = grad.with_cdim(-1).rows()[self.col]
        hit = g.any(0).reshape(self.ids_shape) if len(g) else np.zeros(self.ids_shape, bool)
        return [Status.from_full(hit, -1)]

    def effective(self, ins: list[Status], grad: Any) -> dict[str, torch.Tensor]:
        done = self.unreached(grad)  # answers for a None grad
        if done is not None:
            return done
        w = self.weights[0]
        ids = ins[0].full().reshape(-1)
        reach = (grad.with_cdim(-1).rows() & ids[None, :]).any(1)  # per feature d
        if reach.all():  # every feature matters: the mask itself (no copy; a lazy stand-in stays one)
            return {w.name: self.mask}
        return {w.name: self.mask & torch.from_numpy(reach)[None, :]}


@rule(nn.Embedding)
def embedding_module(ctx: Ctx) -> Op:
    w = ctx.named_weight(str(ctx.node.target) + ".weight", "embedding")
    return Lookup(w, w.mask, ctx.shape(ctx.node.args[0]), tuple(ctx.out.shape))


def _table_and_ids(ctx: Ctx, functional: object) -> tuple:
    """The weight, its mask and the ids of ``F.embedding``-like calls; ATen's forms put the table first."""
    aten_form = ctx.node.target is not functional
    w_arg, ids = (
        (ctx.arg(0, "weight"), ctx.arg(1, "indices")) if aten_form else (ctx.arg(1, "weight"), ctx.arg(0, "input"))
    )
    w = ctx.weight(w_arg, "embedding")
    mask = w.mask if w is not None else torch.ones(ctx.shape(w_arg), dtype=torch.bool)
    return w, mask, ids, aten_form


@rule(F.embedding, aten.embedding)
def embedding_function(ctx: Ctx) -> Op:
    w, mask, ids, _ = _table_and_ids(ctx, F.embedding)
    op = Lookup(w, mask, ctx.shape(ids), tuple(ctx.out.shape))
    op.data = [ids]
    return op


class Bag(Op):
    """``nn.EmbeddingBag``: a lookup of each bag's rows, reduced over the bag (sum, mean or max)."""

    def __init__(self, weight: Weight | None, mask: torch.Tensor, ids_shape: tuple, out_shape: tuple):
        self.weights = [weight] if weight is not None else []
        self.mask, self.ids_shape, self.out_shape = mask, ids_shape, out_shape
        self.col = mask.any(0).numpy()

    multi = True  # the ids, and per-sample weights when there are some (they scale the rows looked up)

    def _bags(self, ins: list[Status]) -> np.ndarray:
        """Per bag: some id (or per-sample weight) of it may be alive (1-D ids with offsets: any, for every bag)."""
        full = ins[0].full()
        for extra in ins[1:]:
            full = full | np.broadcast_to(extra.full(), full.shape)
        if len(self.ids_shape) == 2:
            return np.asarray(full.reshape(self.ids_shape[0], -1).any(1))
        return np.full(self.out_shape[0], bool(full.any()))

    def forward(self, ins: list[Status]) -> Status:
        bags = self._bags(ins)
        return Status.from_full(bags[:, None] & self.col[None, :], 1)

    def backward(self, ins: list[Status], out: Status, grad: Status) -> list[Status]:
        per_bag = (grad.full() & self.col[None, :]).any(1)
        if len(self.ids_shape) == 2:
            hit = np.broadcast_to(per_bag[:, None], self.ids_shape)
        else:
            hit = np.full(self.ids_shape, bool(per_bag.any()))
        part = Status.from_full(np.ascontiguousarray(hit), -1)
        return [part] + [
            part.reduce_to(s.shape)
            if s.shape == part.shape
            else Status.from_full(np.full(s.shape, bool(hit.any())), -1)
            for s in ins[1:]
        ]

    def effective(self, ins: list[Status], grad: Any) -> dict[str, torch.Tensor]:
        done = self.unreached(grad)  # answers for a None grad
        if done is not None:
            return done
        w = self.weights[0]
        reach = (grad.full() & self._bags(ins)[:, None]).any(0)
        if reach.all():
            return {w.name: self.mask}
        return {w.name: self.mask & torch.from_numpy(reach)[None, :]}


@rule(nn.EmbeddingBag)
def embedding_bag_module(ctx: Ctx) -> Op:
    w = ctx.named_weight(str(ctx.node.target) + ".weight", "embedding")
    op = Bag(w, w.mask, ctx.shape(ctx.node.args[0]), tuple(ctx.out.shape))
    psw = ctx.arg(2, "per_sample_weights")
    op.data = [ctx.node.args[0]] + ([psw] if psw in ctx.tensor_args else [])
    return op


@rule(F.embedding_bag, aten.embedding_bag, aten._embedding_bag)
def embedding_bag_function(ctx: Ctx) -> Op:
    w, mask, ids, aten_form = _table_and_ids(ctx, F.embedding_bag)
    out = ctx.out[0] if isinstance(ctx.out, (tuple, list)) else ctx.out
    psw = ctx.arg(7 if aten_form else 6, "per_sample_weights")
    data = [ids] + ([psw] if isinstance(psw, fx.Node) and psw in ctx.tensor_args else [])
    op: Op = Bag(w, mask, ctx.shape(ids), tuple(out.shape))
    op.data = data
    if isinstance(ctx.out, (tuple, list)):
        from .attention import _TupleFirst

        op = _TupleFirst(op, len(ctx.out))
        op.data = data
    return op

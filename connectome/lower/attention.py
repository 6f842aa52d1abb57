"""Attention: ``scaled_dot_product_attention`` and ``nn.MultiheadAttention``.

Per head, an output feature ``e`` at token ``l`` is a softmax-weighted average of ``v[:, e]`` over tokens,
with weights from every feature of the head's ``q[l]`` and ``k``. So the output is alive where ``v[:, e]``
is alive at some token (or where scores vary and ``v`` may be a nonzero constant); ``q`` and ``k`` matter
only for features whose ``v`` varies. ``nn.MultiheadAttention`` adds its q/k/v and output projections,
whose weights are prunable (``in_proj_weight`` or ``q/k/v_proj_weight``, and ``out_proj.weight``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..status import Status, union
from .base import Ctx, Op, Weight, rule
from .mixing import Mixing

aten = torch.ops.aten

__all__ = ["attend_forward", "attend_backward", "SDPA", "MultiheadAttention"]


def attend_forward(fq: np.ndarray, fk: np.ndarray, fv: np.ndarray, v_nonzero: bool, heads: int) -> np.ndarray:
    """(B, L, E), (B, S, E), (B, S, Ev) alive-from-input -> (B, L, Ev)."""
    B, L, E = fq.shape
    S, Ev = fv.shape[1], fv.shape[2]
    qh = fq.reshape(B, L, heads, E // heads).any(-1)
    kh = fk.reshape(B, S, heads, E // heads).any(-1).any(1)
    vh = fv.reshape(B, S, heads, Ev // heads).any(1)
    scores = qh | kh[:, None, :]
    out = vh[:, None] | (v_nonzero & scores[..., None])
    return out.reshape(B, L, Ev)


def attend_backward(g: np.ndarray, fv: np.ndarray, v_nonzero: bool, heads: int, E: int, S: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alive-to-output of q, k, v from the output's (B, L, Ev)."""
    B, L, Ev = g.shape
    gh = g.reshape(B, L, heads, Ev // heads)
    vh = fv.reshape(B, S, heads, Ev // heads).any(1)
    sens = (gh & (vh[:, None] | v_nonzero)).any(-1)                       # (B, L, H)
    bq = np.repeat(sens, E // heads, axis=-1)
    bk = np.broadcast_to(np.repeat(sens.any(1), E // heads, axis=-1)[:, None], (B, S, E))
    bv = np.broadcast_to(gh.any(1).reshape(B, 1, Ev), (B, S, Ev))
    return bq, bk, bv


def _flat3(a: np.ndarray) -> np.ndarray:
    return a.reshape((-1,) + a.shape[-2:])


class SDPA(Op):
    """``F.scaled_dot_product_attention(q, k, v)``; shapes (..., L, E), (..., S, E), (..., S, Ev)."""

    multi = True

    def __init__(self, order: list[int], out_shape: tuple):
        self.order, self.out_shape = order, out_shape

    def _qkv(self, ins: list[Status]):
        q, k, v = (ins[i] for i in self.order)
        lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
        full = [np.broadcast_to(s.full(), lead + s.shape[-2:]) for s in (q, k, v)]
        return q, k, v, lead, full

    def forward(self, ins: list[Status]) -> Status:
        q, k, v, lead, (fq, fk, fv) = self._qkv(ins)
        out = attend_forward(_flat3(fq), _flat3(fk), _flat3(fv), not v.zero, 1)
        return Status.from_full(out.reshape(self.out_shape), -1).with_zero(v.zero)

    def backward(self, ins: list[Status], out: Status, grad: Status) -> list[Status | None]:
        q, k, v, lead, (fq, fk, fv) = self._qkv(ins)
        g = np.broadcast_to(grad.full(), lead + tuple(self.out_shape[-2:]))
        bq, bk, bv = attend_backward(_flat3(g), _flat3(fv), not v.zero, 1, q.shape[-1], fv.shape[-2])
        res: list[Status | None] = [None] * len(ins)
        for i, s, b in zip(self.order, (q, k, v), (bq, bk, bv)):
            b = b.reshape(lead + b.shape[-2:])
            extra = len(lead) - (len(s.shape) - 2)
            b = b.any(axis=tuple(range(extra))) if extra else b
            axes = tuple(d for d in range(len(s.shape) - 2) if s.shape[d] == 1 and b.shape[d] != 1)
            b = b.any(axis=axes, keepdims=True) if axes else b
            part = Status.from_full(b, -1)
            res[i] = part if res[i] is None else union([res[i], part])
        return res


@rule(F.scaled_dot_product_attention, aten.scaled_dot_product_attention,
      aten._scaled_dot_product_flash_attention_for_cpu, aten._scaled_dot_product_efficient_attention,
      aten._scaled_dot_product_flash_attention)
def sdpa(ctx: Ctx) -> Op:
    q, k, v = ctx.arg(0, "query"), ctx.arg(1, "key"), ctx.arg(2, "value")
    out = ctx.out[0] if isinstance(ctx.out, (tuple, list)) else ctx.out
    op = SDPA([ctx.input_index(a) for a in (q, k, v)], tuple(out.shape))
    if isinstance(ctx.out, (tuple, list)):
        return _TupleFirst(op, len(ctx.out))
    return op


class _TupleFirst(Op):
    """An op whose real output is the first element of a tuple (the rest carry no signal we track)."""

    multi = True

    def __init__(self, op: Op, n: int):
        self.op, self.n = op, n

    def forward(self, ins):
        out = self.op.forward(ins)
        return (out,) + (None,) * (self.n - 1)

    def backward(self, ins, out, grad):
        return self.op.backward(ins, out[0], grad[0]) if grad[0] is not None else [None] * len(ins)


class MultiheadAttention(Op):
    """``nn.MultiheadAttention``: q/k/v projections, per-head attention, output projection."""

    multi = True

    def __init__(self, m: nn.MultiheadAttention, ctx: Ctx, order: list[int]):
        self.order, self.batch_first, self.heads = order, m.batch_first, m.num_heads
        name = ctx.node.target
        E = m.embed_dim
        shapes = [ctx.shape(ctx.node.args[i] if len(ctx.node.args) > i else ctx.node.kwargs[n])
                  for i, n in enumerate(("query", "key", "value"))]
        self.shapes = shapes
        outs = ctx.out
        self.attn_out = tuple(outs[0].shape)
        self.weights_shape = tuple(outs[1].shape) if isinstance(outs, (tuple, list)) and outs[1] is not None else None
        if m.in_proj_weight is not None or getattr(m, "in_proj_weight_orig", None) is not None:
            w = ctx.named_weight(f"{name}.in_proj_weight", "attention")
            masks = w.mask.split(E, 0)
            self.packed = w
        else:
            self.packed = None
            ws = [ctx.named_weight(f"{name}.{p}_proj_weight", "attention") for p in "qkv"]
            masks = [x.mask for x in ws]
            self.sep = ws
        self.proj = [Mixing.linear(None, mk, shapes[i][:-1] + (mk.shape[1],), shapes[i][:-1] + (mk.shape[0],))
                     for i, mk in enumerate(masks)]
        ow = ctx.named_weight(f"{name}.out_proj.weight", "linear")
        self.out_w = ow
        self.out = Mixing.linear(ow, ow.mask, self.attn_out[:-1] + (E,), self.attn_out)
        self.weights = ([self.packed] if self.packed is not None else list(self.sep)) + [ow]

    def _bt(self, a: np.ndarray) -> np.ndarray:
        """To (B, L, E) order."""
        return a if self.batch_first or a.ndim == 2 else np.swapaxes(a, 0, 1)

    def _inner(self, ins: list[Status]):
        q, k, v = (self.proj[i].forward([ins[self.order[i]]]) for i in range(3))
        fq, fk, fv = (self._bt(s.full()) for s in (q, k, v))
        if fq.ndim == 2:
            fq, fk, fv = fq[None], fk[None], fv[None]
        return q, k, v, fq, fk, fv

    def forward(self, ins: list[Status]) -> Any:
        q, k, v, fq, fk, fv = self._inner(ins)
        a = attend_forward(fq, fk, fv, False, self.heads)
        a = self._bt(a) if len(self.attn_out) == 3 else a[0]
        attn = Status.from_full(np.ascontiguousarray(a), -1)
        out = self.out.forward([attn])
        w = None
        if self.weights_shape is not None:
            w = Status.uniform(self.weights_shape, -1, bool(fq.any() or fk.any())).with_zero(False)
        return (out, w)

    def backward(self, ins: list[Status], out: Any, grad: Any) -> list[Status | None]:
        g_out = grad[0]
        res: list[Status | None] = [None] * len(ins)
        q, k, v, fq, fk, fv = self._inner(ins)
        if g_out is None or not g_out.any():
            return res
        g_attn = self.out.backward([], None, g_out)[0]
        if g_attn is None:
            return res
        g = self._bt(g_attn.full())
        g = g[None] if g.ndim == 2 else g
        bq, bk, bv = attend_backward(g, fv, False, self.heads, fq.shape[-1], fv.shape[1])
        for i, (b, s) in enumerate(zip((bq, bk, bv), (q, k, v))):
            b = self._bt(b) if len(s.shape) == 3 else b[0]
            part = self.proj[i].backward([], None, Status.from_full(np.ascontiguousarray(b), -1))[0]
            if part is None:
                continue
            j = self.order[i]
            res[j] = part if res[j] is None else union([res[j], part])
        return res

    def effective(self, ins: list[Status], grad: Any) -> dict[str, torch.Tensor]:
        q, k, v, fq, fk, fv = self._inner(ins)
        g_out = grad[0] if grad is not None else None
        a = attend_forward(fq, fk, fv, False, self.heads)
        a = self._bt(a) if len(self.attn_out) == 3 else a[0]
        attn = Status.from_full(np.ascontiguousarray(a), -1)
        res = self.out.effective([attn], g_out) if g_out is not None else {self.out_w.name: torch.zeros_like(self.out_w.mask)}
        g_attn = self.out.backward([], None, g_out)[0] if g_out is not None and g_out.any() else None
        effs = []
        if g_attn is not None:
            g = self._bt(g_attn.full())
            g = g[None] if g.ndim == 2 else g
            bs = attend_backward(g, fv, False, self.heads, fq.shape[-1], fv.shape[1])
        for i in range(3):
            p = self.proj[i]
            if g_attn is None:
                effs.append(torch.zeros_like(p.conn.squeeze(-1)))
                continue
            b = self._bt(bs[i]) if len(self.shapes[i]) == 3 else bs[i][0]
            p.weights = [Weight("_", "attention", p.conn.squeeze(-1))]
            effs.append(p.effective([ins[self.order[i]]], Status.from_full(np.ascontiguousarray(b), -1))["_"])
            p.weights = []
        if self.packed is not None:
            res[self.packed.name] = torch.cat(effs, 0)
        else:
            for w, e in zip(self.sep, effs):
                res[w.name] = e
        return res


@rule(nn.MultiheadAttention)
def multihead_attention(ctx: Ctx) -> Op:
    args = [ctx.node.args[i] if len(ctx.node.args) > i else ctx.node.kwargs[n]
            for i, n in enumerate(("query", "key", "value"))]
    return MultiheadAttention(ctx.module, ctx, [ctx.input_index(a) for a in args])

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
from torch import fx, nn

from ..status import Status, union
from .base import Ctx, Op, Weight, rule
from .fallback import Fallback
from .mixing import Mixing

aten = torch.ops.aten

__all__ = ["attend_forward", "attend_backward", "SDPA", "ProjectedAttention"]


def attend_forward(fq: np.ndarray, fk: np.ndarray, fv: np.ndarray, v_nonzero: bool, heads: int) -> np.ndarray:
    """(B, L, E), (B, S, E), (B, S, Ev) alive-from-input -> (B, L, Ev)."""
    B, L, E = fq.shape
    S, Ev = fv.shape[1], fv.shape[2]
    qh = np.asarray(fq.reshape(B, L, heads, E // heads).any(-1))
    kh = np.asarray(np.asarray(fk.reshape(B, S, heads, E // heads).any(-1)).any(1))
    vh = np.asarray(fv.reshape(B, S, heads, Ev // heads).any(1))
    scores = qh | kh[:, None, :]
    out = vh[:, None] | (v_nonzero & scores[..., None])
    return out.reshape(B, L, Ev)


def attend_backward(
    g: np.ndarray, fv: np.ndarray, v_nonzero: bool, heads: int, E: int, S: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alive-to-output of q, k, v from the output's (B, L, Ev)."""
    B, L, Ev = g.shape
    gh = g.reshape(B, L, heads, Ev // heads)
    vh = np.asarray(fv.reshape(B, S, heads, Ev // heads).any(1))
    sens = np.asarray((gh & (vh[:, None] | v_nonzero)).any(-1))  # (B, L, H)
    bq = np.repeat(sens, E // heads, axis=-1)
    bk = np.broadcast_to(np.repeat(sens.any(1), E // heads, axis=-1)[:, None], (B, S, E))
    bv = np.broadcast_to(gh.any(1).reshape(B, 1, Ev), (B, S, Ev))
    return bq, bk, bv


def _flat3(a: np.ndarray) -> np.ndarray:
    return a.reshape((-1,) + a.shape[-2:])


class SDPA(Op):
    """``F.scaled_dot_product_attention(q, k, v)``; shapes (..., L, E), (..., S, E), (..., S, Ev)."""

    multi = True
    couples = True

    def __init__(self, order: list[int], out_shape: tuple, mask: int | None = None):
        self.order, self.out_shape, self.mask = order, out_shape, mask  # mask: input index of attn_mask

    def _qkv(self, ins: list[Status]):
        q, k, v = (ins[i] for i in self.order)
        fk, fv = _grouped(q, k), _grouped(q, v)  # grouped-query attention: each key head serves a group
        lead = np.broadcast_shapes(q.shape[:-2], fk.shape[:-2], fv.shape[:-2])
        full = [np.broadcast_to(f, lead + f.shape[-2:]) for f in (q.full(), fk, fv)]
        return q, k, v, lead, full

    def forward(self, ins: list[Status]) -> Status:
        q, k, v, lead, (fq, fk, fv) = self._qkv(ins)
        out = attend_forward(_flat3(fq), _flat3(fk), _flat3(fv), not v.zero, 1).reshape(lead + self.out_shape[-2:])
        if self.mask is not None and self.mask not in self.order and not v.zero:
            # a mask computed from the input moves the weights of values that need not be zero
            m = ins[self.mask].full()
            rows = np.asarray(
                np.broadcast_to(m, np.broadcast_shapes(m.shape, lead + fq.shape[-2:-1] + fk.shape[-2:-1])).any(-1)
            )
            out = out | np.broadcast_to(rows[..., None], out.shape)
        return Status.from_full(out.reshape(self.out_shape), -1).with_zero(v.zero)

    def backward(self, ins: list[Status], out: Status, grad: Status) -> list[Status | None]:
        q, k, v, lead, (fq, fk, fv) = self._qkv(ins)
        g = np.broadcast_to(grad.full(), lead + tuple(self.out_shape[-2:]))
        bq, bk, bv = attend_backward(_flat3(g), _flat3(fv), not v.zero, 1, q.shape[-1], fv.shape[-2])
        res: list[Status | None] = [None] * len(ins)
        for i, s, b in zip(self.order, (q, k, v), (bq, bk, bv)):
            b = b.reshape(lead + b.shape[-2:])
            if s is not q:
                b = _ungrouped(b, s.shape)
            extra = len(lead) - (len(s.shape) - 2)
            b = np.asarray(b.any(axis=tuple(range(extra)))) if extra else b
            axes = tuple(d for d in range(len(s.shape) - 2) if s.shape[d] == 1 and b.shape[d] != 1)
            b = np.asarray(b.any(axis=axes, keepdims=True)) if axes else b
            part = Status.from_full(b, -1)
            prev = res[i]
            res[i] = part if prev is None else union([prev, part])
        if self.mask is not None and self.mask not in self.order:
            res[self.mask] = _mask_grad(g, ins[self.mask].shape, fv.shape[-2], bool(v.any() or not v.zero))
        return res


def _grouped(q: Status, kv: Status) -> np.ndarray:
    """``kv`` (..., Hk, S, E) as the query's heads see it: repeated along dim -3 where the query has
    ``Hq = g * Hk`` heads (``enable_gqa``)."""
    f = kv.full()
    if len(q.shape) >= 3 and len(kv.shape) >= 3 and 1 < kv.shape[-3] != q.shape[-3]:
        f = np.repeat(f, q.shape[-3] // kv.shape[-3], axis=-3)
    return f


def _ungrouped(b: np.ndarray, shape: tuple) -> np.ndarray:
    """The inverse of :func:`_grouped` for a backward status: a key head is needed where any of its
    group is."""
    if len(shape) >= 3 and 1 < shape[-3] != b.shape[-3]:
        g = b.shape[-3] // shape[-3]
        b = np.asarray(b.reshape(b.shape[:-3] + (shape[-3], g) + b.shape[-2:]).any(-3))
    return b


def _mask_grad(g: np.ndarray, shape: tuple, S: int, v_matters: bool) -> Status:
    """Where an additive or boolean attention mask (broadcast to ``lead + (L, S)``) matters: every score of
    a query row whose output is alive to an output, when the values are not all exactly zero. For a mask
    made from constants, this is what makes the weights that compute it effective (``relevance``); for
    one computed from the input, what makes the weights that compute it effective in the walk."""
    rows = np.asarray(g.any(-1)) & v_matters  # lead + (L,)
    b = np.broadcast_to(rows[..., None], rows.shape + (S,))
    extra = b.ndim - len(shape)
    b = np.asarray(b.any(axis=tuple(range(extra)))) if extra > 0 else b
    axes = tuple(d for d in range(len(shape)) if shape[d] == 1 and b.shape[d] != 1)
    b = np.asarray(b.any(axis=axes, keepdims=True)) if axes else b
    return Status.from_full(np.ascontiguousarray(np.broadcast_to(b, shape)), -1)


@rule(
    F.scaled_dot_product_attention,
    aten.scaled_dot_product_attention,
    aten._scaled_dot_product_flash_attention_for_cpu,
    aten._scaled_dot_product_efficient_attention,
    aten._scaled_dot_product_flash_attention,
)
def sdpa(ctx: Ctx) -> Op:
    q, k, v = ctx.arg(0, "query"), ctx.arg(1, "key"), ctx.arg(2, "value")
    out = ctx.out[0] if isinstance(ctx.out, (tuple, list)) else ctx.out
    m = ctx.arg(3, "attn_mask")
    mask = ctx.input_index(m) if isinstance(m, fx.Node) and m in ctx.tensor_args else None
    op = SDPA([ctx.input_index(a) for a in (q, k, v)], tuple(out.shape), mask)
    if isinstance(ctx.out, (tuple, list)):
        return _TupleFirst(op, len(ctx.out))
    return op


class _TupleFirst(Op):
    """An op whose real output is the first element of a tuple (the rest carry no signal we track)."""

    multi = True

    def __init__(self, op: Op, n: int):
        self.op, self.n = op, n
        self.weights = op.weights
        self.couples = op.couples

    def effective(self, ins, grad):
        return self.op.effective(ins, grad[0] if grad is not None else None)

    def forward(self, ins):
        out = self.op.forward(ins)
        return (out,) + (None,) * (self.n - 1)

    def backward(self, ins, out, grad):
        return self.op.backward(ins, out[0], grad[0]) if grad[0] is not None else [None] * len(ins)


class ProjectedAttention(Op):
    """q/k/v projections of token tensors, per-head attention, and an output projection.

    ``layouts[i]`` turns a full bool array of input ``i`` into (B, L, E) and back (``nn.MultiheadAttention``
    swaps batch and tokens unless ``batch_first``; Swin flattens its (B, H, W, C) windows).
    """

    multi = True
    couples = True

    def __init__(
        self,
        order: list[int],
        shapes: list[tuple],
        masks: list[torch.Tensor],
        out_weight: Weight,
        attn_shape: tuple,
        heads: int,
        owned: list[Weight],
        packed: bool,
        to_blE,
        from_blE,
        weights_shape: tuple | None = None,
        scores: tuple[int, ...] = (),
    ):
        self.order, self.shapes, self.heads, self.packed = order, shapes, heads, packed
        self.scores = scores  # inputs added to or multiplying the scores (Swin's position bias, logit scale)
        self.attn_shape, self.weights_shape = attn_shape, weights_shape
        self.to_blE, self.from_blE = to_blE, from_blE
        self.proj = [
            Mixing.linear(None, mk, shapes[i][:-1] + (mk.shape[1],), shapes[i][:-1] + (mk.shape[0],))
            for i, mk in enumerate(masks)
        ]
        self.out_w = out_weight
        self.out = Mixing.linear(
            out_weight,
            out_weight.mask,
            attn_shape[:-1] + (out_weight.mask.shape[1],),
            attn_shape[:-1] + (out_weight.mask.shape[0],),
        )
        self.owned = owned
        self.weights = owned + [out_weight]

    def _inner(self, ins: list[Status]):
        qkv = [self.proj[i].forward([ins[self.order[i]]]) for i in range(3)]
        fq, fk, fv = (self.to_blE(s.full()) for s in qkv)
        return fq, fk, fv

    def _attended(self, fq, fk, fv) -> Status:
        a = attend_forward(fq, fk, fv, False, self.heads)
        return Status.from_full(np.ascontiguousarray(self.from_blE(a, self.attn_shape)), -1)

    def _attn_grad(self, g_out: Status | None):
        if g_out is None or not g_out.any():
            return None
        g_attn = self.out.backward([], None, g_out)[0]
        return self.to_blE(g_attn.full()) if g_attn is not None else None

    def _qkv_grads(self, g, fq, fv) -> list[Status]:
        bs = attend_backward(g, fv, False, self.heads, fq.shape[-1], fv.shape[1])
        return [
            Status.from_full(np.ascontiguousarray(self.from_blE(b, self.shapes[i][:-1] + (b.shape[-1],))), -1)
            for i, b in enumerate(bs)
        ]

    def forward(self, ins: list[Status]) -> Any:
        fq, fk, fv = self._inner(ins)
        out = self.out.forward([self._attended(fq, fk, fv)])
        if self.weights_shape is None:
            return out
        w = Status.uniform(self.weights_shape, -1, bool(fq.any() or fk.any())).with_zero(False)
        return (out, w)

    def backward(self, ins: list[Status], out: Any, grad: Any) -> list[Status | None]:
        g_out = grad if self.weights_shape is None else grad[0]
        res: list[Status | None] = [None] * len(ins)
        fq, fk, fv = self._inner(ins)
        g = self._attn_grad(g_out)
        if g is None:
            return res
        for i, b in enumerate(self._qkv_grads(g, fq, fv)):
            part = self.proj[i].backward([], None, b)[0]
            j = self.order[i]
            if part is not None:
                prev = res[j]
                res[j] = part if prev is None else union([prev, part])
        for j in self.scores:  # constants that shape the scores: all of them matter while any output does
            res[j] = Status.uniform(ins[j].shape, -1, True)
        return res

    def effective(self, ins: list[Status], grad: Any) -> dict[str, torch.Tensor]:
        g_out = grad if self.weights_shape is None or grad is None else grad[0]
        fq, fk, fv = self._inner(ins)
        res = self.out.effective([self._attended(fq, fk, fv)], g_out)
        g = self._attn_grad(g_out)
        grads = self._qkv_grads(g, fq, fv) if g is not None else None
        effs = []
        for i, p in enumerate(self.proj):
            if grads is None:
                effs.append(torch.zeros_like(p.conn.squeeze(-1)))
                continue
            b = grads[i]
            p.weights = [Weight("_", "attention", p.conn.squeeze(-1))]
            effs.append(p.effective([ins[self.order[i]]], b)["_"])
            p.weights = []
        if self.packed:
            res[self.owned[0].name] = torch.cat(effs, 0)
        else:
            for w, e in zip(self.owned, effs):
                res[w.name] = e
        return res


@rule(nn.MultiheadAttention)
def multihead_attention(ctx: Ctx) -> Op:
    m: Any = ctx.module
    args = [
        ctx.node.args[i] if len(ctx.node.args) > i else ctx.node.kwargs[n]
        for i, n in enumerate(("query", "key", "value"))
    ]
    name, E = ctx.node.target, m.embed_dim
    if m.in_proj_weight is not None or getattr(m, "in_proj_weight_orig", None) is not None:
        owned = [ctx.named_weight(f"{name}.in_proj_weight", "attention")]
        masks = list(owned[0].mask.split(E, 0))
    else:
        owned = [ctx.named_weight(f"{name}.{p}_proj_weight", "attention") for p in "qkv"]
        masks = [w.mask for w in owned]
    shapes = [ctx.shape(a) for a in args]
    outs = ctx.out
    swap = not m.batch_first

    def to_blE(a: np.ndarray) -> np.ndarray:
        if a.ndim == 2:
            return a[None]
        return np.swapaxes(a, 0, 1) if swap else a

    def from_blE(a: np.ndarray, shape: tuple) -> np.ndarray:
        if len(shape) == 2:
            return a[0]
        return np.swapaxes(a, 0, 1) if swap else a

    wshape = tuple(outs[1].shape) if isinstance(outs, (tuple, list)) and outs[1] is not None else None
    op = ProjectedAttention(
        [ctx.input_index(a) for a in args],
        shapes,
        masks,
        ctx.named_weight(f"{name}.out_proj.weight", "linear"),
        tuple(outs[0].shape),
        m.num_heads,
        owned,
        len(owned) == 1,
        to_blE,
        from_blE,
        wshape,
        scores=tuple(
            ctx.input_index(a)
            for a in (ctx.arg(3, "key_padding_mask"), ctx.arg(5, "attn_mask"))
            if isinstance(a, fx.Node) and a in ctx.tensor_args and a not in args
        ),
    )
    if wshape is None and isinstance(outs, (tuple, list)):
        return _TupleFirst(op, len(outs))
    return op


@rule("torchvision.models.swin_transformer.shifted_window_attention")
def swin_window_attention(ctx: Ctx) -> Op:
    """Swin's fused window attention; tokens of all windows are treated as one (a sound superset)."""
    x, qkv_w, proj_w = ctx.arg(0, "input"), ctx.arg(1, "qkv_weight"), ctx.arg(2, "proj_weight")
    heads = int(ctx.concrete(ctx.arg(5, "num_heads")))
    shape = ctx.shape(x)
    qkv = ctx.weight(qkv_w, "attention")
    proj = ctx.weight(proj_w, "linear")
    if qkv is None or proj is None:
        return Fallback(ctx.out, [ctx.val(a) for a in ctx.tensor_args], "window attention with computed weights")
    C = shape[-1]

    def to_blE(a: np.ndarray) -> np.ndarray:
        return a.reshape(a.shape[0], -1, a.shape[-1])

    def from_blE(a: np.ndarray, shp: tuple) -> np.ndarray:
        return a.reshape(shp)

    i = ctx.input_index(x)
    op = ProjectedAttention(
        [i, i, i],
        [shape] * 3,
        list(qkv.mask.split(C, 0)),
        proj,
        tuple(ctx.out.shape),
        heads,
        [qkv],
        True,
        to_blE,
        from_blE,
        scores=tuple(
            ctx.input_index(a)
            for a in (ctx.arg(3, "relative_position_bias"), ctx.arg(11, "logit_scale"))
            if isinstance(a, fx.Node) and a in ctx.tensor_args and a != x
        ),
    )
    return op

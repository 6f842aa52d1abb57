"""The exact index maps of ops that only move values, read off the op itself.

Each such op (a view, ``cat``, a pad, indexing by a constant) copies input elements to output elements,
and :func:`index_map_op` reads that copy off the op: it is run once, at lowering time, by
:func:`run_on` on index tensors (the element numbers of every input) in place of the data, so no
formula per op can drift from torch's own semantics. The map is then classified once: a *channel map*
(whole channels move, as in ``cat`` or ``split`` along channels, or a channel shuffle's permute) costs
O(C) per walk, a *position map* (every channel moves the same way, as in spatial slicing or padding)
O(P * S); anything else is a gather over all elements. :class:`IndexMap` walks either.

Examples
--------
>>> import torch
>>> from connectome.graph.lower import lower
>>> from connectome.graph.trace import trace
>>> from connectome.io.masks import MaskSource
>>> def kinds(m, shape):
...     op = next(iter(lower(trace(m, input_shape=shape), MaskSource(m)).ops.values()))
...     return type(op).__name__, [o[2] for o in op.outs]
>>> kinds(torch.nn.ChannelShuffle(2), (1, 4, 2, 2)), kinds(torch.nn.ZeroPad2d(1), (1, 2, 2, 2))
(('IndexMap', ['channel']), ('IndexMap', ['position']))
>>> kinds(torch.nn.Flatten(), (1, 3, 2, 2))
('IndexMap', ['general'])
"""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from ... import memory
from ..reduce import all_distinct
from ..status import Status
from .base import Ctx, Op

aten = torch.ops.aten

__all__ = ["IndexMap", "run_on", "index_map_op"]


def run_on(ctx: Ctx, repl: dict[fx.Node, torch.Tensor]) -> Any:
    """Run the node's own target with ``repl`` in place of its tensor inputs."""
    node = ctx.node

    def sub(a: Any) -> Any:
        return repl[a] if a in repl else ctx.val(a)

    args: Any = fx.node.map_aggregate(node.args, lambda a: sub(a) if isinstance(a, fx.Node) else a)
    kwargs: Any = fx.node.map_aggregate(node.kwargs, lambda a: sub(a) if isinstance(a, fx.Node) else a)
    target: Any = node.target
    if node.op == "call_method":
        return getattr(args[0], target)(*args[1:], **kwargs)
    if node.op == "call_module":
        m = ctx.module
        if isinstance(m, nn.modules.padding._ConstantPadNd):
            return F.pad(args[0], m.padding, "constant", 0.0)
        return m(*args, **kwargs)
    if node.target in (F.pad, aten.pad, torch._C._nn.pad) or getattr(node.target, "overloadpacket", None) is aten.pad:
        mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
        if mode == "constant":
            return F.pad(args[0], args[1], "constant", 0.0)
    if getattr(node.target, "overloadpacket", None) is aten.constant_pad_nd:
        return aten.constant_pad_nd(args[0], args[1], 0.0)
    return target(*args, **kwargs)


class IndexMap(Op):
    """Output element ``y`` copies input element ``src[y]`` (numbered over all inputs in status layout)."""

    multi = True

    def __init__(
        self,
        in_shapes: list[tuple],
        in_cdims: list[int],
        outs: list[tuple],
        tuple_out: bool,
        arity: list[int | None] | None = None,
    ):
        self.in_shapes, self.in_cdims, self.outs, self.tuple_out = in_shapes, in_cdims, outs, tuple_out
        self.arity = arity or [None] * len(in_shapes)  # per argument: None (a tensor) or tuple length
        self.sizes = [prod(s) if s else 1 for s in in_shapes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.out_cdim = outs[0][1] if outs else 0

    def _flat(self, ins: list[Any]) -> list[Status]:
        flat: list[Status] = []
        for v, n in zip(ins, self.arity):
            flat.extend(v if n is not None else [v])
        return flat

    def _nest(self, flat: list[Any]) -> list[Any]:
        out, i = [], 0
        for n in self.arity:
            out.append(flat[i] if n is None else tuple(flat[i : i + n]))
            i += 1 if n is None else n
        return out

    def forward(self, ins: list[Any]) -> Any:
        ins = [s.with_cdim(c) for s, c in zip(self._flat(ins), self.in_cdims)]
        zero = all(s.zero for s in ins)
        res = [self._fwd_one(ins, o).with_zero(zero) for o in self.outs]
        return tuple(res) if self.tuple_out else res[0]

    def _fwd_one(self, ins: list[Status], o: tuple) -> Status:
        shape, cdim, kind, data = o
        if kind == "channel":
            src_in, src_ch = data
            used = sorted(set(src_in.tolist()))
            tables, toff = [], {}
            base = 0
            for j in used:
                toff[j] = base
                tables.append(ins[j].table)
                base += len(ins[j].table)
            table = np.concatenate(tables) if tables else np.zeros((0, 0), bool)
            idx = np.full(len(src_in), -1, np.int64)
            for j in used:
                sel = src_in == j
                p = ins[j].idx[src_ch[sel]]
                idx[sel] = np.where(p >= 0, p + toff[j], -1)
            return Status.from_table(table, idx, shape, cdim)
        if kind == "position":
            f = data
            s = ins[0]
            padded = np.concatenate([s.table, np.zeros((len(s.table), 1), bool)], axis=1)
            return Status.from_table(padded[:, np.where(f >= 0, f, s.table.shape[1])], s.idx, shape, cdim)
        flat = np.concatenate([s.rows().ravel() for s in ins] + [np.zeros(1, bool)])
        src = np.where(data >= 0, data, len(flat) - 1)
        c = shape[cdim] if shape else 1
        return Status.from_rows(flat[src].reshape(c, _positions(shape, cdim)), shape, cdim)

    def backward(self, ins: list[Any], out: Any, grad: Any) -> list[Any]:
        grads = list(grad) if self.tuple_out else [grad]
        acc: list[Status | None] = [None] * len(self.in_shapes)
        for o, g in zip(self.outs, grads):
            if g is None or not g.any():
                continue
            for j, s in enumerate(self._bwd_one(o, g.with_cdim(o[1]))):
                if s is not None:
                    prev = acc[j]
                    acc[j] = s if prev is None else _or(prev, s)
        return self._nest(acc)

    def _bwd_one(self, o: tuple, g: Status) -> list[Status | None]:
        shape, cdim, kind, data = o
        n = len(self.in_shapes)
        res: list[Status | None] = [None] * n
        if kind == "channel":
            src_in, src_ch = data
            for j in set(src_in.tolist()):
                sel = np.nonzero(src_in == j)[0]
                ks = src_ch[sel]
                c_in = self.in_shapes[j][self.in_cdims[j]] if self.in_shapes[j] else 1
                if all_distinct(ks):
                    idx = np.full(c_in, -1, np.int64)
                    idx[ks] = g.idx[sel]
                    res[j] = Status(self.in_shapes[j], self.in_cdims[j], g.table, idx)
                else:
                    rows = np.zeros((c_in, g.table.shape[1]), bool)
                    np.logical_or.at(rows, ks, g.rows()[sel])
                    res[j] = Status.from_rows(rows, self.in_shapes[j], self.in_cdims[j])
            return res
        if kind == "position":
            f = data
            ok = f >= 0
            s_in = _positions(self.in_shapes[0], self.in_cdims[0])
            table = (
                np.stack([np.bincount(f[ok], weights=t[ok], minlength=s_in) > 0 for t in g.table])
                if len(g.table)
                else np.zeros((0, s_in), bool)
            )
            res[0] = Status.from_table(table, g.idx, self.in_shapes[0], self.in_cdims[0])
            return res
        flat = g.rows().ravel()
        ok = (data >= 0) & flat
        hit = np.bincount(data[ok], minlength=int(self.offsets[-1])) > 0
        for j in range(n):
            part = hit[self.offsets[j] : self.offsets[j + 1]]
            shp = self.in_shapes[j]
            c = shp[self.in_cdims[j]] if shp else 1
            res[j] = Status.from_rows(part.reshape(c, _positions(shp, self.in_cdims[j])), shp, self.in_cdims[j])
        return res


def _or(a: Status, b: Status) -> Status:
    from ..status import union

    return union([a, b])


def _numbered(shape: tuple, cdim: int, offset: int) -> torch.Tensor:
    """Element numbers (from 1 + offset) laid out so that status-layout order is numeric order."""
    if not shape:
        return torch.tensor(float(offset + 1), dtype=torch.float64)
    c = shape[cdim]
    pos = shape[:cdim] + shape[cdim + 1 :]
    t = torch.arange(offset + 1, offset + 1 + prod(shape), dtype=torch.float64).reshape((c,) + pos)
    return t.movedim(0, cdim).contiguous()  # views in the graph assume a contiguous input


def _positions(shape: tuple, cdim: int) -> int:
    """Positions per channel: the product of every dim but ``cdim`` (so that empty tensors divide by nothing)."""
    return prod(shape[:cdim] + shape[cdim + 1 :]) if shape else 1


def _status_layout(t: torch.Tensor, cdim: int) -> np.ndarray:
    """(C, S) int array of an output index tensor, minus one (so padding is -1)."""
    a = t.detach().to(torch.float64)
    if a.dim() == 0:
        return a.reshape(1, 1).numpy().astype(np.int64) - 1
    a = a.movedim(cdim, 0).reshape(a.shape[cdim], _positions(tuple(t.shape), cdim))
    return a.numpy().astype(np.int64) - 1


def _classify(rows: np.ndarray, in_shapes: list[tuple], in_cdims: list[int], offsets: np.ndarray):
    """ "channel", "position" or "general" map and its data, for (C_out, S_out) global indices."""
    c_out, s_out = rows.shape
    if c_out and s_out and (rows >= 0).all():
        first = rows[:, 0]
        j = np.searchsorted(offsets, first, side="right") - 1
        s_in = np.array([_positions(s, c) for s, c in zip(in_shapes, in_cdims)])
        local = first - offsets[j]
        if (
            (s_in[j] == s_out).all()
            and (local % s_out == 0).all()
            and (rows - first[:, None] == np.arange(s_out)[None, :]).all()
        ):
            return "channel", (j.astype(np.int64), (local // s_out).astype(np.int64))
    if len(in_shapes) == 1 and in_shapes[0]:
        c_in = in_shapes[0][in_cdims[0]]
        s_pos = _positions(in_shapes[0], in_cdims[0])
        if c_in == c_out and c_out:
            base = np.arange(c_out)[:, None] * s_pos
            rel = np.where(rows >= 0, rows - base, -1)
            if ((rel == rel[:1]).all()) and ((rel[:1] < s_pos).all()) and ((rows < 0) | (rel >= 0)).all():
                return "position", rel[0]
    return "general", rows.ravel()


def index_map_op(ctx: Ctx, hints: list[int], data: list | None = None) -> IndexMap:
    """Build the :class:`IndexMap` of the node by running it on numbered inputs.

    Only ``data`` arguments (default: every tensor argument) are numbered; the others are indices
    and must be constants (buffers), whose real values are used.
    """
    ins = ctx.tensor_args if data is None else data
    hints = hints if data is None else [hints[ctx.input_index(a)] for a in data]
    arity = [len(ctx.val(a)) if isinstance(ctx.val(a), (tuple, list)) else None for a in ins]
    in_shapes, in_hints = [], []
    for a, h, n in zip(ins, hints, arity):
        vals = list(ctx.val(a)) if n is not None else [ctx.val(a)]
        in_shapes += [tuple(v.shape) for v in vals]
        in_hints += [h] * len(vals)
    in_cdims = [h % len(s) if s else 0 for h, s in zip(in_hints, in_shapes)]
    sizes = [prod(s) if s else 1 for s in in_shapes]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    memory.reserve(24 * int(offsets[-1]), f"the index map of {ctx.node.name}")  # numbered input, output, rows
    numbered = [_numbered(s, c, int(o)) for s, c, o in zip(in_shapes, in_cdims, offsets)]
    repl: dict = {}
    for a, n in zip(ins, arity):
        repl[a] = numbered.pop(0) if n is None else tuple(numbered.pop(0) for _ in range(n))
    for a in ctx.tensor_args:
        if a not in repl:
            repl[a] = ctx.constant(a)  # an index must be known ahead of time
    with torch.no_grad():
        result = run_on(ctx, repl)
    tuple_out = isinstance(result, (tuple, list))
    results = list(result) if tuple_out else [result]
    outs = []
    for r in results:
        shape = tuple(r.shape)
        cands = _cdim_candidates(shape, in_shapes[0] if in_shapes else (), in_cdims[0] if in_cdims else 0)
        best: Any = None
        for cd in cands:
            rows = _status_layout(r, cd)
            kind, data = _classify(rows, in_shapes, in_cdims, offsets)
            if best is None or kind != "general":
                best = (shape, cd, kind, data)
            if kind != "general":
                break
        outs.append(best)
    op = IndexMap(in_shapes, in_cdims, outs, tuple_out, arity)
    op.data = list(ins)
    return op


def _cdim_candidates(out: tuple, inp: tuple, in_cdim: int) -> list[int]:
    if not out:
        return [0]
    n = len(out)
    c = []
    if inp and in_cdim == len(inp) - 1:
        c.append(n - 1)
    if in_cdim < n:
        c.append(in_cdim)
    c += [1 % n, n - 1, 0]
    seen: list[int] = []
    for d in c:
        if d not in seen:
            seen.append(d)
    return seen

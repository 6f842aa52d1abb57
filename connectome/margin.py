"""Collapse margin: the fewest remaining weights whose removal disconnects every input from every output.

A minimum cut on the unit graph. Vertices are units (channels, features) of every tensor the walk
found alive; a linear or conv layer joins input unit ``j`` to output unit ``o`` with capacity = the
number of its *effective* weights between them (kernel taps included); every other op joins the units it
connects with unbounded capacity, since it holds no weight to remove. The maximum flow from all inputs
to all outputs equals the minimum cut (scipy.sparse.csgraph.maximum_flow); the layers the cut runs
through are where the network is thinnest.

Units are channels: positions inside a channel are folded, so the margin is exact for MLPs and an upper
bound when only some positions of a channel connect. How an op without weights connects channels is read
off its own forward rule, by probing it with input channels alive in binary-coded groups.

Examples
--------
>>> import torch, connectome
>>> m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
>>> with torch.no_grad(): m[2].weight[:, 1:] = 0        # only hidden unit 0 reaches the outputs
>>> r = collapse_margin(connectome.analyze(m, input_shape=(1, 3)))
>>> r.margin, r.bottleneck_layer
(2, '2')
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .analysis import Analysis
from .graph.lower.mixing import Mixing
from .graph.status import Status, slots

__all__ = ["Margin", "collapse_margin"]

_PER_CHANNEL_LIMIT = 2048  # probe one channel at a time up to this many when binary probes are ambiguous
_DENSE_LIMIT = 4_000_000  # an all-to-all block bigger than this is too large to add


@dataclass
class Margin:
    """``margin``: weights to remove to collapse the network (0 when it already is; None when skipped)."""

    margin: int | None
    bottleneck_layer: str | None = None
    cut: dict[str, int] = field(default_factory=dict)  # layer -> weights of the minimum cut in it
    note: str | None = None
    units: int = 0
    edges: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "collapse_margin": self.margin,
            "bottleneck_layer": self.bottleneck_layer,
            "cut_layers": dict(self.cut),
            "margin_note": self.note,
        }


class _Budget(Exception):
    pass


def collapse_margin(
    res: Analysis, budget_s: float = 60.0, progress: Callable[[int, int], None] | None = None
) -> Margin:
    """The minimum cut between all inputs and all outputs of ``res``'s unit graph (see module docs).

    Skipped (``margin=None`` with a note) when building the graph would take longer than ``budget_s``.
    """
    start = time.perf_counter()
    if res.collapsed:
        return Margin(0, note="the network is already collapsed")
    try:
        return _solve(res, start, budget_s, progress)
    except _Budget as e:
        return Margin(None, note=f"skipped: {e}", seconds=time.perf_counter() - start)


def _dead(v: Any) -> Any:
    if isinstance(v, Status):
        return Status.uniform(v.shape, v.cdim, False).with_zero(False)  # a nonzero constant, like a weight
    if isinstance(v, tuple):
        return tuple(_dead(x) for x in v)
    return None


class _Builder:
    def __init__(self, res: Analysis, start: float, budget_s: float):
        self.w = res.walk
        self.g = res.walk.graph
        self.start, self.budget_s = start, budget_s
        self.offset: dict[tuple[Any, int], int] = {}
        self.n = 2  # 0: source, 1: sink
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.caps: list[np.ndarray] = []
        self.layer: list[np.ndarray] = []  # layer id per edge, -1 for unbounded edges
        self.layers: list[str] = []

    def check_time(self) -> None:
        if time.perf_counter() - self.start > self.budget_s:
            raise _Budget(f"building the unit graph exceeded the {self.budget_s:g} s budget")

    def slot(self, node: Any, k: int, s: Status) -> int:
        key = (node, k)
        if key not in self.offset:
            self.offset[key] = self.n
            self.n += s.channels
        return self.offset[key]

    def add(self, r: np.ndarray, c: np.ndarray, cap: np.ndarray | None, layer: int = -1) -> None:
        if len(r) == 0:
            return
        self.rows.append(r.astype(np.int64))
        self.cols.append(c.astype(np.int64))
        if cap is None:
            self.caps.append(np.full(len(r), -1, np.int64))  # unbounded, set once the total is known
        else:
            self.caps.append(cap.astype(np.int64))
        self.layer.append(np.full(len(r), layer, np.int64))


def _solve(res: Analysis, start: float, budget_s: float, progress) -> Margin:
    import scipy.sparse
    from scipy.sparse.csgraph import breadth_first_order, maximum_flow

    b = _Builder(res, start, budget_s)
    w, g = b.w, b.g
    traced = g.traced
    for node in traced.inputs:
        for k, s in slots(w.fwd.get(node)):
            alive = np.nonzero(s.alive_units())[0]
            b.add(np.zeros(len(alive)), b.slot(node, k, s) + alive, None)
    nodes = [n for n in g.ops if _live(w.fwd.get(n)) and _live(w.bwd.get(n))]
    for i, node in enumerate(nodes):
        b.check_time()
        if progress:
            progress(i, len(nodes))
        _op_edges(b, node)
    for node in traced.outputs:
        ref = dict(slots(w.fwd.get(node)))
        for k, s in slots(w.bwd.get(node)):
            if (node, k) in b.offset and k in ref:
                alive = np.nonzero(s.with_cdim(ref[k].cdim).alive_units() & ref[k].alive_units())[0]
                b.add(b.offset[(node, k)] + alive, np.ones(len(alive)), None)
    if progress:
        progress(len(nodes), len(nodes))
    rows, cols, caps, layer = (
        np.concatenate(parts or [np.zeros(0, np.int64)]) for parts in (b.rows, b.cols, b.caps, b.layer)
    )
    finite_total = int(caps[caps > 0].sum())
    big = finite_total + 1
    if big >= 2**31 - 1:
        return Margin(None, note="skipped: too many effective weights for 32-bit capacities")
    caps = np.where(caps < 0, big, caps)
    keep = rows != cols
    rows, cols, caps, layer = rows[keep], cols[keep], caps[keep], layer[keep]
    free = layer < 0
    U = scipy.sparse.csr_matrix((np.ones(int(free.sum()), np.int8), (rows[free], cols[free])), shape=(b.n, b.n))
    if 1 in set(breadth_first_order(U, 0, directed=True, return_predecessors=False).tolist()):
        return Margin(
            None,
            note="some input reaches an output through no prunable weight (a skip path): "
            "no number of weights removed disconnects it",
            units=b.n,
            edges=len(rows),
            seconds=time.perf_counter() - start,
        )
    # every input-output path now crosses a finite edge, so the flow stays below `big` (no int32 overflow)
    C = scipy.sparse.csr_matrix((caps, (rows, cols)), shape=(b.n, b.n))
    C.data = np.minimum(C.data, big)  # parallel unbounded edges must stay "unbounded", not overflow
    C = C.astype(np.int32)
    flow = maximum_flow(C, 0, 1)
    value = int(flow.flow_value)
    seconds = time.perf_counter() - start
    F = flow.flow.tocsr()
    R = (C.astype(np.int64) - F.astype(np.int64)).tocsr()
    R.data = (R.data > 0).astype(np.int8)
    R.eliminate_zeros()
    reach = np.zeros(b.n, bool)
    reach[breadth_first_order(R, 0, directed=True, return_predecessors=False)] = True
    cut = reach[rows] & ~reach[cols] & (layer >= 0)
    per_layer: dict[str, int] = {}
    for lid, cap in zip(layer[cut], caps[cut]):
        per_layer[b.layers[lid]] = per_layer.get(b.layers[lid], 0) + int(cap)
    bottleneck = max(per_layer, key=per_layer.__getitem__) if per_layer else None
    return Margin(
        value, bottleneck, dict(sorted(per_layer.items(), key=lambda kv: -kv[1])), None, b.n, len(rows), seconds
    )


def _live(v: Any) -> bool:
    return any(s.any() for _, s in slots(v))


def _op_edges(b: _Builder, node: Any) -> None:
    w, g = b.w, b.g
    op = g.ops[node]
    args = g.args[node]
    outs = slots(w.fwd.get(node))
    if not outs:
        return
    out_base = {k: b.slot(node, k, s) for k, s in outs}
    for i, a in enumerate(args):
        for ka, sa in slots(w.fwd.get(a)):
            if not sa.any() or (a, ka) not in b.offset:
                continue
            base_in = b.offset[(a, ka)]
            if isinstance(op, Mixing) and i == 0 and op.weights and _mixing_edges(b, node, op, sa, base_in, out_base):
                continue
            _probe_edges(b, node, op, i, ka, sa, base_in, outs, out_base)


def _mixing_edges(b: _Builder, node, op: Mixing, s_in: Status, base_in: int, out_base: dict) -> bool:
    w = b.w
    out = w.fwd.get(node)
    ndim = len(s_in.shape)
    cdim = op.cdim % ndim if ndim else 0
    if not isinstance(out, Status) or s_in.cdim != cdim or out.cdim != op.cdim % max(len(out.shape), 1):
        return False
    ins: list[Any] = [w.fwd.get(a) for a in b.g.args[node]]  # the walk's statuses (Status, tuple or None)
    grad = w.bwd.get(node)
    eff = op.effective_conn(ins, grad if isinstance(grad, Status) and grad.any() else None)
    counts = eff.view(torch.uint8).sum(-1, dtype=torch.int64).numpy()  # (O, Ig)
    o, j = np.nonzero(counts)
    og = op.out_channels // op.groups
    ig = counts.shape[1]
    src = (o // og) * ig + j
    lid = len(b.layers)
    b.layers.append(op.weights[0].name.removesuffix(".weight"))
    b.add(base_in + src, out_base[0] + o, counts[o, j], lid)
    return True


def _probe_edges(b: _Builder, node, op, i: int, ka: int, s_in: Status, base_in: int, outs, out_base) -> None:
    """Edges of an op without weights, from its forward rule probed with groups of input channels alive."""
    w, g = b.w, b.g
    args = g.args[node]
    fwd = [_dead(w.fwd.get(a)) for a in args]
    C = s_in.channels
    S = int(np.prod(s_in.pos_shape, dtype=np.int64)) if s_in.shape else 1

    def run(sel: np.ndarray) -> dict[int, np.ndarray]:
        probe = Status(s_in.shape, s_in.cdim, np.ones((1, S), bool), np.where(sel, 0, -1).astype(np.int64), s_in.zero)
        ins = list(fwd)
        slot = fwd[i]
        ins[i] = probe if not isinstance(slot, tuple) else tuple(probe if k == ka else x for k, x in enumerate(slot))
        try:
            out = op.forward(ins)
        except Exception:
            out = None
        got = dict(slots(out))
        result = {}
        for k, ref in outs:
            s = got.get(k)
            result[k] = (
                s.with_cdim(ref.cdim).alive_units() if s is not None and s.any() else np.zeros(ref.channels, bool)
            )
        return result

    alive = s_in.alive_units()
    chans = np.arange(C)
    bits = max(1, math.ceil(math.log2(C))) if C > 1 else 1
    on = [run(alive & (((chans >> bit) & 1) == 1)) for bit in range(bits)]
    off = [run(alive & (((chans >> bit) & 1) == 0)) for bit in range(bits)]
    for k, ref in outs:
        hit_on = np.stack([r[k] for r in on])  # (bits, C_out)
        hit_off = np.stack([r[k] for r in off])
        reached = (hit_on | hit_off).any(0)
        single = (hit_on ^ hit_off).all(0)
        src = (hit_on.astype(np.int64) << np.arange(bits)[:, None]).sum(0)
        ok = single & (src < C)
        if (reached & ~ok).any():  # some output unit reads several input units: probe one at a time
            _per_channel(b, run, alive, k, base_in, out_base[k], ref.channels)
            continue
        cols = np.nonzero(reached)[0]
        b.add(base_in + src[cols], out_base[k] + cols, None)


def _per_channel(b: _Builder, run, alive: np.ndarray, k: int, base_in: int, base_out: int, c_out: int) -> None:
    chans = np.nonzero(alive)[0]
    if len(chans) <= _PER_CHANNEL_LIMIT:
        for j in chans:
            b.check_time()
            hit = np.nonzero(run(np.arange(len(alive)) == j)[k])[0]
            b.add(np.full(len(hit), base_in + j), base_out + hit, None)
        return
    if len(chans) * c_out > _DENSE_LIMIT:
        raise _Budget(f"an op mixes {len(chans)} units into {c_out}: too large to probe")
    rr, cc = np.meshgrid(chans, np.arange(c_out), indexing="ij")  # sound: assume every pair connects
    b.add(base_in + rr.ravel(), base_out + cc.ravel(), None)

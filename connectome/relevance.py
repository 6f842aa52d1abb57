"""Constants that meet live signal in a product: the weights that make them are effective.

A unit fed only by parameters is a constant. While a constant only *adds* on its way to the outputs
it could be folded into downstream biases, so the weights that make it are not effective. But a
nonzero constant that is *multiplied* with input-dependent signal (a learned query attending to the
input, a class token used as a query, a gate or scale computed from a learned embedding) acts as a
parameter of the input-output function: zeroing the weights that make it changes the outputs.

After the walk, this pass finds such meetings: at every op that couples its inputs (products,
attention, normalisation, ops without a rule), the elements of an input that are dead from input but
may be nonzero, and that matter to an alive-to-output element. From those seeds, *relevance* goes
backward through the graph with the ops' own backward rules, into the constant computations (lowered
here, on demand), and a weight is effective where it carries a constant into a relevant unit. A zero
constant (dead elements that are exactly zero) still kills: it is never a seed.

Examples
--------
>>> import torch
>>> from connectome import analyze
>>> class LearnedQuery(torch.nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.latents = torch.nn.Parameter(torch.randn(1, 2, 4))
...         self.wq, self.wk = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
...     def forward(self, x):
...         q = self.wq(self.latents)                      # input-independent
...         return torch.softmax(q @ self.wk(x).transpose(1, 2), -1) @ x
>>> res = analyze(LearnedQuery(), input_shape=(1, 3, 4))
>>> int(res.effective_masks["wq.weight"].sum())     # q weights the input-dependent keys
16
"""
from __future__ import annotations

from typing import Any

import torch
from torch import fx

from .lower import UnitGraph, lower_node
from .lower.misc import Constant
from .status import Status, any_alive, union

__all__ = ["constant_weights"]


def _maybe_constant(s: Any) -> bool:
    """Dead elements of ``s`` may be nonzero constants (and some element is dead)."""
    return isinstance(s, Status) and not s.zero and not s.is_full()


def _dead_part(c: Status, s: Status) -> Status | None:
    """``c`` where ``s`` is dead."""
    c = c.with_cdim(s.cdim)
    if not s.any():
        return c
    return Status.from_full(c.full() & ~s.full(), s.cdim)


def _merge(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, Status) and isinstance(b, Status):
        return union([a, b])
    if isinstance(a, tuple) and isinstance(b, tuple):
        return tuple(_merge(x, y) for x, y in zip(a, b))
    return a


def _alive_like(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return Status.uniform(tuple(v.shape), 1 if v.dim() > 1 else 0, True).with_zero(False)
    if isinstance(v, (tuple, list)):
        return tuple(_alive_like(x) for x in v)
    return None


def _constant_part(s: Any) -> Any:
    """Where a value may hold a nonzero constant (its dead elements, unless they are exactly zero)."""
    if isinstance(s, Status):
        if s.zero or s.is_full():
            return Status.uniform(s.shape, s.cdim, False)
        return Status.from_full(~s.full(), s.cdim).with_zero(False) if s.any() else \
            Status.uniform(s.shape, s.cdim, True).with_zero(False)
    if isinstance(s, tuple):
        return tuple(_constant_part(x) for x in s)
    return s


def constant_weights(g: UnitGraph, fwd: dict, bwd: dict) -> dict[str, torch.Tensor]:
    """Effective masks (by key) of weights that make constants which meet live signal in a product."""
    rel: dict[fx.Node, Any] = {}
    effective: dict[str, torch.Tensor] = {}
    for node, op in g.ops.items():
        if not getattr(op, "couples", False) or not any_alive(bwd.get(node)):
            continue
        ins = [fwd.get(a) for a in g.args[node]]
        if not any(_maybe_constant(s) for s in ins):
            continue
        if op.weights:   # weights inside the product (attention's projections): constants count as signal
            _add(effective, g, op, [_alive_or_constant(s) for s in ins], bwd[node])
        for a, s, c in zip(g.args[node], ins, op.backward(ins, fwd[node], bwd[node])):
            if isinstance(c, Status) and _maybe_constant(s):
                seed = _dead_part(c, s)
                if seed is not None and seed.any():
                    rel[a] = _merge(rel.get(a), seed)
    if not rel:
        return effective
    t = g.traced
    lowered: dict[fx.Node, tuple] = {}
    for node in reversed(list(t.graph.nodes)):
        r = rel.get(node)
        if not any_alive(r):
            continue
        op, args, ins, out = _op_at(g, node, fwd, lowered)
        if op is None:
            continue
        for a, c in zip(args, op.backward(ins, out, r)):
            if c is not None:
                rel[a] = _merge(rel.get(a), c)
    for node, r in rel.items():
        op, args, ins, out = _op_at(g, node, fwd, lowered)
        if op is None and isinstance(r, Status):   # a weight read as a raw tensor (DETR's query embedding)
            _add_leaf(effective, g, node, r)
            continue
        if op is None or not op.weights or not any_alive(r):
            continue
        _add(effective, g, op, ins if node in lowered else [_constant_part(s) for s in ins], r)
    return effective


def _add(effective: dict, g: UnitGraph, op: Any, ins: list, grad: Any) -> None:
    """OR the op's effective masks for ``ins`` and ``grad`` into ``effective``, by parameter key."""
    owned = {w.name: w for w in op.weights}
    for name, m in op.effective(ins, grad).items():
        w = owned.get(name)
        for key, pm in (w.back(m, lambda k: tuple(g.masks[k].shape)) if w is not None else {name: m}).items():
            effective[key] = effective[key] | pm if key in effective else pm


def _add_leaf(effective: dict, g: UnitGraph, node: fx.Node, r: Status) -> None:
    """A parameter read directly, whose relevant elements are effective (where they are nonzero)."""
    name = g.traced.attr_name(node)
    if name is None or g.masks is None or not g.masks.names.is_param(name):
        return
    key = g.masks.names.key(name)
    mask = g.masks.get(key)
    if mask is None or tuple(mask.shape) != tuple(r.shape) or key in g.masks.names.parametrized:
        return
    m = torch.from_numpy(r.full().copy()) & mask
    effective[key] = effective[key] | m if key in effective else m


def _alive_or_constant(s: Any) -> Any:
    """Alive from input, or a value that may be a nonzero constant."""
    if isinstance(s, Status) and not s.zero:
        return Status.uniform(s.shape, s.cdim, True)
    return s


def _op_at(g: UnitGraph, node: fx.Node, fwd: dict, lowered: dict) -> tuple:
    """The op of ``node`` with its arguments, their statuses and its output status; constant nodes are
    lowered here with every leaf alive (their statuses say where a constant may be nonzero)."""
    op = g.ops.get(node)
    if op is None:
        return None, [], [], None
    if not isinstance(op, Constant):
        args = g.args[node]
        return op, args, [fwd.get(a) for a in args], fwd.get(node)
    if node not in lowered:
        found = lower_node(g.traced, node, g.masks)
        if found is None:
            lowered[node] = (None, [], [], None)
        else:
            op, args = found
            ins = [_alive_like(g.traced.vals.get(a)) for a in args]
            try:
                out = op.forward(ins)
            except Exception:
                op, args, ins, out = None, [], [], None
            lowered[node] = (op, args, ins, out)
    return lowered[node]

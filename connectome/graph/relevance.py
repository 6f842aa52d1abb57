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

from typing import TYPE_CHECKING, Any

import torch
from torch import fx

from .lower import UnitGraph, lower_node
from .lower.fallback import Constant
from .status import Status, any_alive, union

if TYPE_CHECKING:  # connectome.io.masks imports this package: typing only, no cycle
    from ..io.masks import MaskSource

__all__ = ["constant_weights"]


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
        return (
            Status.from_full(~s.full(), s.cdim).with_zero(False)
            if s.any()
            else Status.uniform(s.shape, s.cdim, True).with_zero(False)
        )
    if isinstance(s, tuple):
        return tuple(_constant_part(x) for x in s)
    return s


def constant_weights(g: UnitGraph, fwd: dict, bwd: dict) -> dict[str, torch.Tensor]:
    """Effective masks (by key) of weights that make constants which meet live signal in a product."""
    flow = _constant_flow(g)

    def constant_part(a: fx.Node, s: Any) -> Any:
        """Where argument ``a`` (status ``s``) may hold a nonzero constant: its dead elements that need not
        be zero, and (``flow``) elements that a constant made by weights was added into."""
        part = _constant_part(s)
        k = flow.get(a)
        return _merge(part, k) if isinstance(part, Status) and isinstance(k, Status) and k.any() else part

    rel: dict[fx.Node, Any] = {}
    effective: dict[str, torch.Tensor] = {}
    for node, op in g.ops.items():
        if not getattr(op, "couples", False) or not any_alive(bwd.get(node)):
            continue
        args = g.args[node]
        ins = [fwd.get(a) for a in args]
        parts = [constant_part(a, s) for a, s in zip(args, ins)]
        if not any(any_alive(p) for p in parts):
            continue
        if op.weights:  # weights inside the product (attention's projections): constants count as signal
            _add(
                effective, g, op, [_merge(s, p) if isinstance(p, Status) else s for s, p in zip(ins, parts)], bwd[node]
            )
        for a, p, c in zip(args, parts, op.backward(ins, fwd[node], bwd[node])):
            if isinstance(c, Status) and isinstance(p, Status) and p.any():
                seed = _within(c, p)
                if seed.any():
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
        if op is None and isinstance(r, Status):  # a weight read as a raw tensor (DETR's query embedding)
            _add_leaf(effective, g, node, r)
            continue
        if op is None or not op.weights or not any_alive(r):
            continue
        _add(effective, g, op, ins if node in lowered else [constant_part(a, s) for a, s in zip(args, ins)], r)
    return effective


_WEIGHTED = frozenset(
    {
        "linear",
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "convolution",
        "matmul",
        "mm",
        "bmm",
        "addmm",
        "baddbmm",
        "einsum",
        "tensordot",
        "embedding",
        "bilinear",
        "__matmul__",
    }
)


def _constant_flow(g: UnitGraph) -> dict[fx.Node, Any]:
    """Per node, where a constant that weights made (``wq(latents)``) may be part of its value, once added
    into live signal: a forward walk seeded at such constants. Empty when the graph has none.

    Other constants are not followed: biases, norm shifts and added embeddings only add (DESIGN.md), and a
    constant that stays dead is seen by its dead elements already.
    """
    t = g.traced
    made = _made_by_weights(t)
    seeds = {n for n, op in g.ops.items() if isinstance(op, Constant) and made(n)}
    if not seeds:
        return {}
    inputs = set(t.inputs)
    flow: dict[fx.Node, Any] = {}
    for node in t.graph.nodes:
        op = g.ops.get(node)
        v = t.vals.get(node)
        if node in seeds:
            flow[node] = _alive_like(v)
        elif op is None or isinstance(op, Constant):
            # inputs carry no constant part (zero); other constants are nonzero, just not followed
            flow[node] = _dead_like(v, zero=node in inputs)
        else:
            try:
                flow[node] = op.forward([flow.get(a) for a in g.args[node]])
            except Exception:  # an op that cannot take these statuses: the constant may be anywhere in it
                flow[node] = _alive_like(v)
    return flow


def _made_by_weights(t: Any):
    """A memoised test: is a constant node computed through a weighted op (a layer applied to constants)?"""
    memo: dict[fx.Node, bool] = {}

    def made(n: fx.Node) -> bool:
        if n in memo:
            return memo[n]
        memo[n] = False
        if n.op == "call_module":
            from ..io.masks import _kind_of

            found = _kind_of(t.module(n)) is not None
        elif n.op in ("call_function", "call_method"):
            name = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "")
            found = str(name).split(".")[0] in _WEIGHTED
        else:
            found = False
        memo[n] = found or any(made(a) for a in n.all_input_nodes)
        return memo[n]

    return made


def _dead_like(v: Any, zero: bool) -> Any:
    if isinstance(v, torch.Tensor):
        return Status.uniform(tuple(v.shape), 1 if v.dim() > 1 else 0, False).with_zero(zero)
    if isinstance(v, (tuple, list)):
        return tuple(_dead_like(x, zero) for x in v)
    return None


def _within(c: Status, part: Status) -> Status:
    """``c`` where ``part`` holds."""
    part = part.with_cdim(c.cdim)
    if part.is_full():
        return c
    return Status.from_full(c.full() & part.broadcast_to(c.shape).full(), c.cdim)


def _add(effective: dict, g: UnitGraph, op: Any, ins: list, grad: Any) -> None:
    """OR the op's effective masks for ``ins`` and ``grad`` into ``effective``, by parameter key."""
    owned = {w.name: w for w in op.weights}
    for name, m in op.effective(ins, grad).items():
        w = owned.get(name)
        for key, pm in (w.back(m, lambda k: tuple(_masks(g)[k].shape)) if w is not None else {name: m}).items():
            effective[key] = effective[key] | pm if key in effective else pm


def _masks(g: UnitGraph) -> MaskSource:
    """The graph's mask source (:func:`~connectome.graph.lower.lower` always gives it one)."""
    if g.masks is None:
        raise ValueError("the unit graph has no mask source: build it with connectome.graph.lower.lower")
    return g.masks


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
        found = lower_node(g.traced, node, _masks(g))
        if found is None:  # no rule, or its rule fails: every output depends on every input
            from .lower.base import tensor_args
            from .lower.fallback import Fallback

            targs = tensor_args(g.traced, node)
            found = (Fallback(g.traced.vals.get(node), [g.traced.vals.get(a) for a in targs], "constant"), targs)
        op, args = found
        ins = [_alive_like(g.traced.vals.get(a)) for a in args]
        try:
            out = op.forward(ins)
        except Exception:  # statuses this rule cannot take: all to all
            from .lower.fallback import Fallback

            op = Fallback(g.traced.vals.get(node), [g.traced.vals.get(a) for a in args], "constant")
            out = op.forward(ins)
        lowered[node] = (op, args, ins, out)
    return lowered[node]

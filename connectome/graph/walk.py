"""The walk: alive-from-input forward, alive-to-output backward, then effective masks per weight.

Forward, model inputs are alive everywhere and every other leaf (parameters, buffers, constants) is
dead; each op maps its inputs' status to its output's. Backward, model outputs are alive everywhere;
each op maps its output's status back to its inputs', and a node used several times ORs what its users
send back. A weight is effective where its op sees an alive input and an alive-to-output output.

Examples
--------
>>> import torch
>>> from connectome.graph.trace import trace
>>> from connectome.io.masks import MaskSource
>>> from connectome.graph.lower import lower
>>> m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
>>> with torch.no_grad(): m[1].weight[0, 1] = 0
>>> w = walk(lower(trace(m, input_shape=(1, 2)), MaskSource(m)))
>>> w.effective["0.weight"].tolist()
[[True, True], [False, False]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from .. import memory
from .lower import UnitGraph
from .status import Status, any_alive, merge

__all__ = ["Walk", "walk", "add_effective", "with_constants"]


@dataclass
class Walk:
    graph: UnitGraph
    fwd: dict[fx.Node, Any]  # alive-from-input status per node (Status, tuple, or None)
    bwd: dict[fx.Node, Any]  # alive-to-output status per node
    effective: dict[str, torch.Tensor]
    by_ops: dict[str, torch.Tensor] | None = None  # the ops' own parts of ``effective`` (constants' not OR-ed in)


def _leaf(v: Any, alive: bool) -> Any:
    if isinstance(v, torch.Tensor):
        s = Status.uniform(tuple(v.shape), 1 if v.dim() > 1 else 0, alive)
        return s if alive else s.with_zero(False)  # parameters and constants are nonzero constants
    if isinstance(v, (tuple, list)):
        return tuple(_leaf(x, alive) for x in v)
    return None


def _param_shape(g: UnitGraph, key: str) -> tuple:
    mask = g.masks.get(key) if g.masks is not None else None
    if mask is not None:
        return tuple(mask.shape)
    param = g.traced.attr(key)
    param = param if param is not None else g.traced.attr(key + "_orig")
    if param is None:
        raise LookupError(f"no mask, parameter or buffer {key!r} in the model")
    return tuple(param.shape)


def walk(g: UnitGraph) -> Walk:
    """Run both walks and compute effective masks for every weight the graph's ops own."""
    t = g.traced
    inputs = set(t.inputs)
    fwd: dict[fx.Node, Any] = {}
    nodes = list(t.graph.nodes)
    for i, node in enumerate(nodes):
        memory.check(done=(1 + i / len(nodes)) / 3)
        op = g.ops.get(node)
        if op is None:
            if node.op in ("placeholder", "get_attr", "call_module", "call_function", "call_method"):
                fwd[node] = _leaf(t.vals.get(node), node in inputs)
            continue
        fwd[node] = op.forward([fwd.get(a) for a in g.args[node]])
    bwd: dict[fx.Node, Any] = {}
    for node in t.outputs:
        bwd[node] = merge(bwd.get(node), _leaf(t.vals[node], True))
    for i, node in enumerate(reversed(nodes)):
        memory.check(done=(2 + i / len(nodes)) / 3)
        op = g.ops.get(node)
        grad = bwd.get(node)
        if op is None or not any_alive(grad):
            continue
        for a, contrib in zip(g.args[node], op.backward([fwd.get(a) for a in g.args[node]], fwd[node], grad)):
            if contrib is not None:
                bwd[a] = merge(bwd.get(a), contrib)
    effective: dict[str, torch.Tensor] = {}
    for node, op in g.ops.items():
        add_effective(g, fwd, bwd, node, op, effective)
    return with_constants(g, fwd, bwd, effective)


def with_constants(g: UnitGraph, fwd: dict, bwd: dict, by_ops: dict[str, torch.Tensor]) -> Walk:
    """The walk whose ops' effective parts are ``by_ops``, with the parts of weights that make constants
    which meet live signal (:func:`~connectome.graph.relevance.constant_weights`) OR-ed in."""
    from .relevance import constant_weights

    if g.masks is not None:
        g.masks.reading = "constants"  # masks read from here on decide constants' effective parts
    try:
        constants = constant_weights(g, fwd, bwd)
    finally:
        if g.masks is not None:
            g.masks.reading = None
    effective = dict(by_ops)
    for key, m in constants.items():  # constants that meet live signal in a product
        effective[key] = effective[key] | m if key in effective else m
    return Walk(g, fwd, bwd, effective, by_ops)


def add_effective(
    g: UnitGraph, fwd: dict, bwd: dict, node: fx.Node, op: Any, effective: dict[str, torch.Tensor]
) -> None:
    """OR the effective parts of the weights ``op`` (at ``node``) owns into ``effective``, by key."""
    if not op.weights:
        return
    grad = bwd.get(node)
    owned = {w.name: w for w in op.weights}
    for name, m in op.effective([fwd.get(a) for a in g.args[node]], grad if any_alive(grad) else None).items():
        w = owned.get(name)
        for key, pm in (w.back(m, lambda k: _param_shape(g, k)) if w is not None else {name: m}).items():
            effective[key] = effective[key] | pm if key in effective else pm

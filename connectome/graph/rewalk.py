"""A walk redone for a few ops whose masks changed, when the rest of it cannot change.

The walk is a function of each op's answers: forward, its output's status from its inputs'; backward,
what it sends each input from its inputs', its output's and its output's alive-to-output status. When
some weights' masks change, only the ops that read those masks can answer differently. If each of them,
lowered again with the new masks, gives the same forward status and the same backward contributions
as before, for the statuses the old walk gave it, then every status of the old walk is the new walk's
too (by induction along the graph's order, forward and then backward). Then only those ops' effective
masks change, and only they are computed again; so are the parts of the weights that make constants
meeting live signal, whole (that flow runs the ops on statuses of its own). Otherwise (an answer
differs, a changed weight is also read outside the ops lowered again, or shared with an op that is
not) there is no shortcut: ``None``.

The lazy analysis of a model folder (:mod:`connectome.hf.proxy`) walks once on stand-in masks, reads
the true masks of the few layers near dead units, and confirms the walk this way instead of walking
the whole graph again.

Examples
--------
>>> import torch
>>> from connectome.graph.trace import trace
>>> from connectome.graph.lower import lower
>>> from connectome.graph.walk import walk
>>> from connectome.io.masks import MaskSource
>>> m = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
>>> t = trace(m, input_shape=(1, 3))
>>> g = lower(t, MaskSource(m, {"1.weight": torch.tensor([[1, 1, 0]])}))
>>> w = walk(g)
>>> thinner = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 1]])
>>> new = MaskSource(m, {"1.weight": torch.tensor([[1, 1, 0]]), "0.weight": thinner})
>>> w2 = rewalk(g, w, {"0.weight"}, new, readers={"0.weight": set(g.ops)})  # every op: a superset
>>> w2.effective["0.weight"].int().tolist()
[[1, 1, 1], [1, 0, 0], [0, 0, 0]]
>>> rewalk(g, w, {"0.weight"}, MaskSource(m, {"1.weight": torch.tensor([[1, 1, 0]]), "0.weight": torch.eye(3)}),
...        readers={"0.weight": set(g.ops)}) is None  # input 2 now feeds only a unit dead to the output
True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import fx

from .lower import UnitGraph
from .lower.base import Ctx, tensor_args
from .status import Status, any_alive
from .walk import Walk, add_effective, with_constants

if TYPE_CHECKING:  # connectome.io.masks imports this package: typing only, no cycle
    from ..io.masks import MaskSource

__all__ = ["rewalk", "same"]


def rewalk(
    g: UnitGraph, w: Walk, changed: Iterable[str], source: MaskSource, readers: Mapping[str, set[Any]]
) -> Walk | None:
    """The walk of ``g`` with the masks of ``source``, where only the masks of keys ``changed`` differ
    from the ones ``g`` was lowered with; ``readers[key]`` are the nodes whose lowering read that mask
    (anything else among them: read outside the lowering of an op). None where the old walk's statuses
    may not hold."""
    changed = set(changed)
    nodes: set[fx.Node] = set()
    for key in changed:
        who = readers.get(key)
        if who is None or not who <= set(g.ops):
            return None
        nodes |= who
    if w.by_ops is None:
        return None
    new_ops: dict[fx.Node, Any] = {}
    for node in [n for n in g.ops if n in nodes]:
        op = _relower(g, node, source)
        if op is None:
            return None
        old = g.ops[node]
        ins = [w.fwd.get(a) for a in g.args[node]]
        if not same(op.forward(ins), w.fwd.get(node)):
            return None
        grad = w.bwd.get(node)
        if any_alive(grad):
            before = old.backward(ins, w.fwd.get(node), grad)
            after = op.backward(ins, w.fwd.get(node), grad)
            if len(before) != len(after) or not all(same(a, b) for a, b in zip(before, after)):
                return None
        new_ops[node] = op
    keys = {k for node in nodes for op in (g.ops[node], new_ops[node]) for wt in op.weights for k in wt.keys}
    for node, op in g.ops.items():  # a key shared with an op not lowered again keeps its OR: no shortcut
        if node not in nodes and any(k in keys for wt in op.weights for k in wt.keys):
            return None
    g2 = replace(g, ops={**g.ops, **new_ops}, masks=source)
    by_ops = {k: v for k, v in w.by_ops.items() if k not in keys}
    for node in new_ops:
        add_effective(g2, w.fwd, w.bwd, node, new_ops[node], by_ops)
    # constants' parts again: their flow runs the ops on statuses of its own, which the check above did not see
    return with_constants(g2, w.fwd, w.bwd, by_ops)


def _relower(g: UnitGraph, node: fx.Node, source: MaskSource) -> Any:
    """The op of ``node`` lowered again by its rule, with the channel dims it was given; None where its
    rule is unknown or it reads other arguments than before."""
    fn = g.rule_of.get(node)
    if fn is None or node not in g.hints:
        return None
    targs = tensor_args(g.traced, node)
    source.reading = node
    try:
        op = fn(Ctx(node, g.traced, source, targs, g.hints[node]))
    except Exception:
        return None
    finally:
        source.reading = None
    if op is None or type(op) is not type(g.ops[node]):
        return None
    data = op.data if op.data is not None else (targs if op.multi else targs[:1])
    return op if list(data) == g.args[node] else None


def same(a: Any, b: Any) -> bool:
    """Two walk values (a :class:`~connectome.graph.status.Status`, a tuple of them, or None) say the same."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, tuple) or isinstance(b, tuple):
        return (
            isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        )
    if not isinstance(a, Status) or not isinstance(b, Status):
        return False
    if a.shape != b.shape or a.zero != b.zero:
        return False
    if a.cdim == b.cdim and np.array_equal(a.idx, b.idx) and np.array_equal(a.table, b.table):
        return True
    return bool(np.array_equal(a.full(), b.full()))

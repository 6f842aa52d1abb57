"""Lowering: turn every node of a traced graph into an :class:`~connectome.graph.lower.base.Op`.

Importing this package imports every rule module, each of which registers its rules.

Examples
--------
>>> import torch
>>> from connectome.graph.trace import trace
>>> from connectome.io.masks import MaskSource
>>> m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
>>> g = lower(trace(m, input_shape=(1, 4)), MaskSource(m))
>>> [type(op).__name__ for op in g.ops.values()]
['Mixing', 'Elementwise']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import fx

from ... import memory
from ..cost import walk_bytes
from ..trace import Traced
from . import (  # noqa: F401
    additive,
    along,
    attention,
    bilinear,
    conv,
    elementwise,
    embedding,
    gather,
    indexmap,
    linear,
    misc,
    moe,
    norm,
    optables,
    positional,
    products,
    recurrent,
    routing,
    scatter,
    structural,
)
from .base import RULES, Ctx, LowerError, Op, find_rule, key_name, tensor_args
from .misc import Constant, Fallback

if TYPE_CHECKING:  # connectome.io.masks imports this package: typing only, no cycle
    from ...io.masks import MaskSource

__all__ = ["Lowered", "UnitGraph", "lower", "lower_node", "mask_free", "RULES", "Op"]


@dataclass
class UnitGraph:
    """The lowered graph: one op per computing node, in topological order."""

    traced: Traced
    ops: dict[fx.Node, Op]
    args: dict[fx.Node, list[fx.Node]]  # the tensor arguments each op reads, in order
    unsupported: list[dict] = field(default_factory=list)
    rule_of: dict[fx.Node, Any] = field(default_factory=dict)  # the rule function that lowered each node
    masks: MaskSource | None = None  # where the weights' masks came from
    hints: dict[fx.Node, list[int]] = field(default_factory=dict)  # the channel dims each rule was given


def _is_value(v: Any) -> bool:
    if isinstance(v, torch.Tensor):
        return True
    return isinstance(v, (tuple, list)) and any(_is_value(x) for x in v)


def lower(traced: Traced, masks: MaskSource, reuse: Mapping[fx.Node, Lowered] | None = None) -> UnitGraph:
    """Lower every node that computes a tensor; ops without a rule become conservative fallbacks.

    ``reuse`` holds ops lowered before (:func:`mask_free`) that read no mask: each is taken as it is
    where it gets the same channel dims as then."""
    ops: dict[fx.Node, Op] = {}
    args: dict[fx.Node, list[fx.Node]] = {}
    unsupported: list[dict] = []
    hints: dict[fx.Node, int] = {}
    rule_of: dict[fx.Node, Any] = {}
    given: dict[fx.Node, list[int]] = {}
    depends = traced.depends_on_input()
    memory.reserve(walk_bytes(traced), "the analysis")  # refuse at once what would not fit
    nodes = list(traced.graph.nodes)
    for i, node in enumerate(nodes):
        memory.check(done=i / 3 / len(nodes))  # lowering is about a third of an analysis's memory
        out = traced.vals.get(node)
        if isinstance(out, torch.Tensor):
            hints[node] = _default_cdim(out)
        if node.op not in ("call_module", "call_function", "call_method") or not _is_value(out):
            continue
        targs = tensor_args(traced, node)
        if not depends[node]:  # computed from parameters and constants only: dead, whatever the op
            ops[node], args[node] = Constant(out), []
            continue
        given[node] = [hints.get(a, 1) for a in targs]
        pre = reuse.get(node) if reuse else None
        if pre is not None and pre.hints == given[node]:  # lowered before, reading no mask, with these dims
            op, fn = pre.op, pre.rule
        else:
            op, fn = _by_rule(traced, node, masks, targs, given[node])
        rule_of[node] = fn
        if op is None:
            op = Fallback(out, [traced.vals.get(a) for a in targs], "no rule")
        if not op.supported:
            unsupported.append(
                {"node": node.name, "op": _target_name(traced, node), "reason": getattr(op, "reason", "") or "no rule"}
            )
        data = op.data if op.data is not None else (targs if op.multi else targs[:1])
        ops[node], args[node] = op, list(data)
        if isinstance(out, torch.Tensor):
            hints[node] = _hint(op, out, [traced.vals.get(a) for a in data], [hints.get(a) for a in data])
    return UnitGraph(traced, ops, args, unsupported, rule_of, masks, given)


def _by_rule(traced: Traced, node: fx.Node, masks: MaskSource, targs: list, hints: list[int]) -> tuple[Any, Any]:
    _, fn = find_rule(traced, node)
    masks.reading = node
    try:
        return (fn(Ctx(node, traced, masks, targs, hints)) if fn is not None else None), fn
    except LowerError:
        raise
    except Exception as e:
        raise LowerError(
            f"cannot lower node {node.name} ({_target_name(traced, node)}): {type(e).__name__}: {e}"
        ) from e
    finally:
        masks.reading = None


@dataclass
class Lowered:
    """One node's op as lowered before, with the rule that made it and the channel dims it was given."""

    op: Op
    rule: Any
    hints: list[int]


def mask_free(g: UnitGraph) -> dict[fx.Node, Lowered]:
    """The ops of ``g`` whose lowering read no mask (views, reshapes, elementwise ops...), to ``reuse`` in
    a later :func:`lower` of the same trace; ``g`` must have been lowered with a tracked source
    (:meth:`~connectome.io.masks.MaskSource.track`)."""
    if g.masks is None or g.masks.readers is None:
        return {}
    read: set = set()
    for who in g.masks.readers.values():  # a reader may be a group (one node's lowering building another's op)
        for r in who:
            read.update(r if isinstance(r, tuple) else (r,))
    return {n: Lowered(op, g.rule_of[n], g.hints[n]) for n, op in g.ops.items() if n in g.rule_of and n not in read}


def lower_node(traced: Traced, node: fx.Node, masks: MaskSource) -> tuple[Op, list[fx.Node]] | None:
    """The op of one node by its rule, with the arguments it reads; None without a rule or if the rule fails.

    :func:`lower` folds nodes that do not depend on the inputs into constants; the walk for constants
    that meet live signal (:mod:`connectome.graph.relevance`) lowers them one by one with this.
    """
    targs = tensor_args(traced, node)
    _, fn = find_rule(traced, node)
    if fn is None:
        return None
    try:
        op = fn(
            Ctx(
                node,
                traced,
                masks,
                targs,
                [_default_cdim(traced.vals[a]) if isinstance(traced.vals.get(a), torch.Tensor) else 1 for a in targs],
            )
        )
    except Exception:
        return None
    if op is None:
        return None
    return op, list(op.data if op.data is not None else (targs if op.multi else targs[:1]))


def _hint(op: Op, out: torch.Tensor, ins: list, in_hints: list) -> int:
    """The channel dim the op's output will most likely have (saves re-layouts in the walk)."""
    oc = getattr(op, "out_cdim", getattr(op, "cdim", None))
    if isinstance(oc, int):
        return oc % max(out.dim(), 1)
    for v, h in zip(ins, in_hints):
        if isinstance(v, torch.Tensor) and v.dim() == out.dim() and h is not None:
            return h
    return _default_cdim(out)


def _default_cdim(t: torch.Tensor) -> int:
    return 1 if t.dim() > 1 else 0


def _target_name(traced: Traced, node: fx.Node) -> str:
    if node.op == "call_module":
        return key_name(traced.module(node))
    if node.op == "call_method":
        return "Tensor." + str(node.target)
    return key_name(node.target)

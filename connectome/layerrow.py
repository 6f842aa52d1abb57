"""An analysis's layer table: per weight, its effective mask and its row (units in and out of its op, and how
many are dead).

Examples
--------
>>> import torch
>>> from connectome.graph.lower import lower
>>> from connectome.graph.trace import trace
>>> from connectome.graph.walk import walk
>>> from connectome.io.masks import MaskSource
>>> m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
>>> t = trace(m, input_shape=(1, 2))
>>> src = MaskSource(m, {"1.weight": torch.tensor([[1, 0]])})
>>> g = lower(t, src)
>>> eff, masks, kinds, layers, collapsed, unsupported = layer_table(t, g, walk(g), src, {"0.weight": "linear"})
>>> eff["0.weight"].int().tolist(), [(r["name"], r["effective"]) for r in layers], sorted(op_weights(g))
([[1, 1], [0, 0]], [('0', 2), ('1', 1)], ['0.weight', '1.weight'])
"""

from __future__ import annotations

import torch
from torch import fx

from .graph.lower import UnitGraph
from .graph.reduce import count_true
from .graph.refs import referenced
from .graph.status import Status, any_alive
from .graph.trace import Traced
from .graph.walk import Walk
from .io.masks import MaskSource, in_dense

__all__ = ["layer_row", "layer_table", "op_weights"]


def layer_row(
    name: str, kind: str, mask: torch.Tensor, eff: torch.Tensor, owner, graph: UnitGraph, w: Walk, nonzero: int
) -> dict:
    layer = name[: -len(".weight")] if name.endswith(".weight") else name
    units_in = units_out = dead_in = dead_out = 0
    if owner is not None:
        node = owner[0]
        out_f, out_b = w.fwd.get(node), w.bwd.get(node)
        out_f = out_f[0] if isinstance(out_f, tuple) else out_f
        out_b = out_b[0] if isinstance(out_b, tuple) else out_b
        args = graph.args.get(node) or []
        op = graph.ops[node]
        cdim = getattr(op, "cdim", None)
        counts = (
            op.unit_counts(name, [w.fwd.get(a) for a in args], w.bwd.get(node)) if hasattr(op, "unit_counts") else None
        )
        if counts is not None:  # ops with several cells (stacked recurrent layers) count per weight
            units_in, units_out, dead_in, dead_out = counts
        elif isinstance(out_f, Status):
            s = out_f.with_cdim(cdim) if isinstance(cdim, int) else out_f
            units_out = s.channels
            dead_in = int((~s.alive_units()).sum())
            if isinstance(out_b, Status):
                b = out_b.with_cdim(s.cdim)
                dead_out = int((~b.alive_units()).sum())
            else:
                dead_out = units_out
        x = w.fwd.get(args[0]) if args else None
        if isinstance(x, Status) and counts is None:
            units_in = x.with_cdim(cdim).channels if isinstance(cdim, int) else x.channels
    elif mask.dim() >= 2:
        units_in, units_out = int(mask.shape[1]), int(mask.shape[0])
        dead_in = dead_out = units_out
    same = eff.data_ptr() == mask.data_ptr() and eff.shape == mask.shape and eff.stride() == mask.stride()
    effective = nonzero if same else count_true(eff)  # all-alive layers return their mask itself
    return {
        "name": layer,
        "kind": kind,
        "numel": mask.numel(),
        "nonzero": nonzero,
        "effective": effective,
        "units_in": units_in,
        "units_out": units_out,
        "dead_in": dead_in,
        "dead_out": dead_out,
    }


def op_weights(graph: UnitGraph) -> set[str]:
    """The keys of every weight the graph's ops read."""
    return {key for op in graph.ops.values() for wt in op.weights for key in wt.keys}


def layer_table(
    traced: Traced, graph: UnitGraph, w: Walk, source: MaskSource, kinds: dict[str, str], dense: tuple[str, ...] = ()
) -> tuple[dict, dict, dict, list, bool, list]:
    """What an analysis holds of a walk (see :class:`~connectome.analysis.Analysis`): effective masks,
    masks, weight kinds, the layer table, whether the network collapsed, and the ops without a rule."""
    owners: dict[str, tuple[fx.Node, str]] = {}
    uses: dict[str, int] = {}
    support: dict[str, torch.Tensor] = {}
    kinds = dict(kinds)  # weights found only through ops join this run's list, not the Analyzer's
    for node, op in graph.ops.items():
        for wt in op.weights:
            for key in wt.keys:
                owners.setdefault(key, (node, wt.kind))
                kinds.setdefault(key, wt.kind)
                uses[key] = uses.get(key, 0) + 1
            for key, sup in wt.support.items():  # computed weights: zeros the computation made nonzero
                support[key] = support[key] | sup if key in support else sup
    used = {source.names.key(r) for r in referenced(traced)}
    masks, eff, layers = {}, {}, []
    unsupported = list(graph.unsupported)
    for name, kind in kinds.items():
        if in_dense(name, dense):  # followed by the walk, not counted
            continue
        mask = source.get(name)
        if mask is None:
            continue
        nonzero = source.count(name)
        if name in support and not bool((support[name] <= mask).all()):
            mask = mask | support[name]
            nonzero = count_true(mask)
        masks[name] = mask
        if name in w.effective:
            eff[name] = w.effective[name]
            if name in source.names.renormalized and eff[name].any():
                eff[name] = mask.clone()  # zeroing one entry rescales all: one effective entry keeps them all
        elif name in owners or not any(name == r or name.startswith(r + ".") or r == name + "_orig" for r in used):
            eff[name] = torch.zeros_like(mask)  # owned but never reached, or only in constant computations
        else:  # used by an op we cannot see into: never call it ineffective
            eff[name] = mask.clone()
            unsupported.append({"node": "", "op": name, "reason": "weight used by an op without a rule"})
        row = layer_row(name, kind, mask, eff[name], owners.get(name), graph, w, nonzero)
        row["shared_with"] = source.names.aliases(name)
        row["uses"] = uses.get(name, 0)
        layers.append(row)
    collapsed = not any(any_alive(w.fwd.get(n)) for n in traced.outputs)
    return eff, masks, dict(kinds), layers, collapsed, unsupported

"""One row of an analysis's layer table: units in and out of a weight's op, and how many are dead."""

from __future__ import annotations

import torch

from .graph.lower import UnitGraph
from .graph.reduce import count_true
from .graph.status import Status
from .graph.walk import Walk

__all__ = ["layer_row"]


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

"""Finding mixture-of-experts products in a graph, and their rules (the ops are in :mod:`.routing`).

An expert product is ``grouped_mm(x, W, offs)`` (``torch._grouped_mm``, ``F.grouped_mm``, transformers'
``grouped_mm_fallback``) or ``bmm(W[idx], x)`` / ``bmm(x, W[idx])`` with ``W`` a 3-D constant and ``idx``
computed. A product whose activation is computed, row by row, from another product's output under the
same routing node (and from constants), with nothing else reading the middle, is the second of a pair:
it becomes an :class:`~.routing.ExpertMLP` and the first reports no weight of its own.

Examples
--------
>>> import torch
>>> from connectome import analyze
>>> class Experts(torch.nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.router = torch.nn.Linear(4, 2)
...         self.up, self.down = torch.nn.Parameter(torch.randn(2, 3, 4)), torch.nn.Parameter(torch.randn(2, 4, 3))
...     def forward(self, x):                                    # (tokens, 4)
...         e = self.router(x).argmax(-1)
...         h = torch.relu(torch.bmm(self.up[e], x.unsqueeze(-1)))
...         return torch.bmm(self.down[e], h).squeeze(-1)
>>> m = Experts()
>>> with torch.no_grad(): m.up[0, 1] = 0                      # expert 0's unit 1 is dead
>>> res = analyze(m, input_shape=(5, 4), tracer="export")
>>> res.effective_masks["down"][:, :, 1].any(1).tolist()        # its down column only, not expert 1's
[False, True]
"""

from __future__ import annotations

import weakref
from math import ceil, log2
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx

from ..values import writes_in_place
from .base import RULES, Ctx, Op, rule
from .fallback import Fallback, uniform_like
from .routing import ExpertMLP, ExpertProduct, Side

aten = torch.ops.aten

__all__ = ["selected_product"]

_GROUPED = {aten._grouped_mm, torch._grouped_mm} | ({F.grouped_mm} if hasattr(F, "grouped_mm") else set())
_GROUPED_CUSTOM = "transformers::grouped_mm_fallback"
_BMM = (aten.bmm, torch.bmm, ".bmm", aten.matmul, torch.matmul, ".matmul")


def _target(n: fx.Node) -> Any:
    return "." + str(n.target) if n.op == "call_method" else getattr(n.target, "overloadpacket", n.target)


def _is_grouped(n: fx.Node) -> bool:
    t = _target(n)
    return n.op == "call_function" and (t in _GROUPED or getattr(t, "_qualified_op_name", None) == _GROUPED_CUSTOM)


def _selection(traced, n: Any) -> tuple[fx.Node, fx.Node] | None:
    """``(param, idx)`` for ``param[idx]`` (a constant table indexed on its first dim by computed ids)."""
    if not isinstance(n, fx.Node) or n.op != "call_function":
        return None
    dep = traced.depends_on_input()
    t = getattr(n.target, "overloadpacket", n.target)
    name = getattr(t, "__name__", "")
    args: Any = n.args
    if name == "index" and len(args) > 1 and len(args[1]) == 1:
        table, idx = args[0], args[1][0]
    elif name == "getitem" and len(args) > 1 and isinstance(args[1], fx.Node):
        table, idx = args
    else:
        return None
    if not isinstance(table, fx.Node) or dep.get(table, True) or not isinstance(idx, fx.Node) or not dep.get(idx):
        return None
    v, i = traced.vals.get(table), traced.vals.get(idx)
    if (
        not isinstance(v, torch.Tensor)
        or v.dim() != 3
        or not isinstance(i, torch.Tensor)
        or i.dim() != 1
        or i.is_floating_point()
        or i.dtype == torch.bool
    ):
        return None
    return table, idx


def _parts(traced, n: fx.Node) -> tuple[fx.Node, fx.Node, fx.Node, str] | None:
    """``(x, weight operand, routing, layout)`` of an expert product node; layout "grouped", "wx" or "xw"."""
    if n.op not in ("call_function", "call_method"):
        return None
    args: Any = n.args
    if _is_grouped(n):
        offs = args[2] if len(args) > 2 else n.kwargs.get("offs")
        x, w = args[0], args[1]
        vx, vw = traced.vals.get(x), traced.vals.get(w)
        if (
            not isinstance(offs, fx.Node)
            or not isinstance(vx, torch.Tensor)
            or vx.dim() != 2
            or not isinstance(vw, torch.Tensor)
            or vw.dim() != 3
        ):
            return None
        return x, w, offs, "grouped"
    if _target(n) in _BMM and len(args) >= 2:
        a, b = args[0], args[1]
        for w, x, layout in ((a, b, "wx"), (b, a, "xw")):
            sel = _selection(traced, w)
            vx = traced.vals.get(x)
            if (
                sel is not None
                and isinstance(vx, torch.Tensor)
                and vx.dim() == 3
                and vx.shape[0] == traced.vals[sel[1]].shape[0]
            ):
                return x, sel[0], sel[1], layout
    return None


def _side(ctx: Ctx, parts: tuple) -> Side | None:
    _, w, ctrl, layout = parts
    weight = ctx.weight(w, "linear")
    if weight is None or weight.mask.dim() != 3:
        return None
    if layout == "grouped":
        return Side.of(weight, xt=False, mt=False, per_row=False)
    return Side.of(weight, xt=layout == "wx", mt=layout == "wx", per_row=True)


_MAX_CHAIN = 64


def _pair(traced, n2: fx.Node) -> tuple[fx.Node, list[fx.Node]] | None:
    """``(first product, middle nodes in graph order)`` when ``n2`` is the second of an expert MLP, else None."""
    cache = traced.__dict__.setdefault("_expert_pairs", {})
    if n2 not in cache:
        cache[n2] = None  # (and while it is being found: a first product is never a second)
        cache[n2] = _find_pair(traced, n2)
    return cache[n2]


def _find_pair(traced, n2: fx.Node) -> tuple[fx.Node, list[fx.Node]] | None:
    parts = _parts(traced, n2)
    if parts is None:
        return None
    x2, _, ctrl, layout = parts
    dep = traced.depends_on_input()
    chain: set[fx.Node] = set()
    firsts: set[fx.Node] = set()
    todo = [x2]
    while todo:
        n = todo.pop()
        if n in chain or n in firsts:
            continue
        p = _parts(traced, n)
        if p is not None and p[2] is ctrl and (p[3] == "grouped") == (layout == "grouped"):
            firsts.add(n)
            continue
        if n.op not in ("call_function", "call_method", "call_module") or n is ctrl or len(chain) >= _MAX_CHAIN:
            return None
        chain.add(n)
        todo.extend(a for a in n.all_input_nodes if dep.get(a, False))
    if len(firsts) != 1:
        return None
    p1 = next(iter(firsts))
    if _pair(traced, p1) is not None:  # a second product already: three in a row are not fused
        return None
    for n in chain | firsts:  # the middle feeds the second product only
        if any(u not in chain and u is not n2 and dep.get(u, False) for u in n.users):
            return None
    order = {n: i for i, n in enumerate(traced.graph.nodes)}
    middle = sorted(chain, key=order.__getitem__)
    if not _row_wise(traced, p1, middle, x2):
        return None
    return p1, middle


def _run(traced, p1: fx.Node, middle: list[fx.Node], x2: fx.Node, t: torch.Tensor) -> torch.Tensor:
    """``x2``'s value computed from ``t`` as ``p1``'s output, through the middle (its other inputs are constants)."""
    vals: dict[fx.Node, Any] = {p1: t}

    def val(a: Any) -> Any:
        return vals[a] if a in vals else traced.constant(a)

    with torch.no_grad():
        for n in middle:
            args = fx.node.map_arg(n.args, val)
            kwargs = fx.node.map_arg(n.kwargs, val)
            if writes_in_place(n) and args and isinstance(args[0], torch.Tensor):
                args = (args[0].clone(),) + tuple(args[1:])  # never write into a folded constant
            target: Any = n.target
            if n.op == "call_module":
                vals[n] = traced.module(n)(*args, **kwargs)
            elif n.op == "call_method":
                vals[n] = getattr(args[0], target)(*args[1:], **kwargs)
            else:
                vals[n] = target(*args, **kwargs)
    return vals[x2]


def _row_wise(traced, p1: fx.Node, middle: list[fx.Node], x2: fx.Node) -> bool:
    """Whether row ``s`` of ``x2`` depends on row ``s`` of ``p1``'s output only (checked by perturbing rows:
    for each bit of the row number, the rows with that bit set, then those with it clear)."""
    v1, v2 = traced.vals[p1], traced.vals[x2]
    if v1.dim() == 0 or v2.dim() == 0 or v1.shape[0] != v2.shape[0]:
        return False
    n = v1.shape[0]
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(tuple(v1.shape), generator=gen).to(v1.dtype)
    try:
        ref = _run(traced, p1, middle, x2, base.clone())
        rows = torch.arange(n)
        for b in range(max(1, ceil(log2(max(n, 2))))):
            for side in (0, 1):
                moved = ((rows >> b) & 1) == side
                t = base.clone()
                t[moved] += torch.randn(t[moved].shape, generator=gen).to(t.dtype) + 1
                got = _run(traced, p1, middle, x2, t)
                if not torch.equal(got[~moved], ref[~moved]):
                    return False
    except Exception:
        return False
    return True


def _middle_ops(ctx: Ctx, middle: list[fx.Node]) -> tuple[list, dict] | None:
    """The middle's ops (lowered by their own rules), and the statuses of the constants they read."""
    from . import lower_node

    chain, consts = [], {}
    inside = set(middle)
    for n in middle:
        found = lower_node(ctx.traced, n, ctx.masks)
        if found is None or found[0].weights or not found[0].supported:
            return None
        chain.append((n, found[0], found[1]))
        for a in found[1]:
            if a not in inside and a not in consts:
                consts[a] = uniform_like(ctx.val(a), False, zero=False)
    return chain, consts


def _op(ctx: Ctx, parts: tuple) -> Op | None:
    """The op of an expert product node: the first of a pair (no weights), the pair, or a lone product."""
    try:
        return _expert_op(ctx, parts)
    except Exception:  # a layout this does not read: the caller's product, or a fallback
        return None


def _expert_op(ctx: Ctx, parts: tuple) -> Op | None:
    side = _side(ctx, parts)
    if side is None:
        return None
    node, traced = ctx.node, ctx.traced
    pair = _fused(ctx, node)
    if pair is not None:
        return pair
    seconds = [u for u in traced.graph.nodes if u is not node and _parts(traced, u) is not None]
    owns = not any((p := _pair(traced, u)) is not None and p[0] is node and _fused(ctx, u) is not None for u in seconds)
    op = ExpertProduct(side, owns)
    op.data = [parts[0], parts[2]]
    return op


def _fused(ctx: Ctx, n2: fx.Node) -> ExpertMLP | None:
    """The :class:`ExpertMLP` of the pair whose second product is ``n2``, or None. Built once per masks, when
    the first product is lowered, so that the first gives its weight up only if the second takes it."""
    store = ctx.traced.__dict__.setdefault("_expert_mlps", {})
    ref, op = store.get(n2, (None, None))
    if ref is not None and ref() is ctx.masks:
        return op
    reading, ctx.masks.reading = ctx.masks.reading, ("fused", ctx.node, n2)  # read for two nodes: no rerun
    try:
        op = _build_fused(ctx, n2)
    except Exception:
        op = None
    finally:
        ctx.masks.reading = reading
    store[n2] = (weakref.ref(ctx.masks), op)
    return op


def _build_fused(ctx: Ctx, n2: fx.Node) -> ExpertMLP | None:
    traced = ctx.traced
    pair = _pair(traced, n2)
    if pair is None:
        return None
    p1, middle = pair
    parts1, parts2 = _parts(traced, p1), _parts(traced, n2)
    if parts1 is None or parts2 is None:  # (never: the pair was found by its parts)
        return None
    first, second = _side(ctx, parts1), _side(ctx, parts2)
    if first is None or second is None:
        return None
    lowered = _middle_ops(ctx, middle)
    if lowered is None:
        return None
    op = ExpertMLP(first, second, p1, parts2[0], *lowered)
    op.data = [parts1[0], parts2[0], parts2[2]]
    return op


@rule(aten._grouped_mm, torch._grouped_mm, _GROUPED_CUSTOM, *((F.grouped_mm,) if hasattr(F, "grouped_mm") else ()))
def grouped_mm(ctx: Ctx) -> Op:
    """``grouped_mm(x, W, offs)``: rows of ``x`` in group ``e`` (ends at ``offs[e]``) times ``W[e]``."""
    parts = _parts(ctx.traced, ctx.node)
    op = _op(ctx, parts) if parts is not None else None
    if op is not None:
        return op
    a, b = ctx.node.args[0], ctx.node.args[1]
    if ctx.val(a).dim() == 3 and ctx.val(b).dim() == 3 and parts is None:  # no offsets: a batched matmul
        return RULES[aten.bmm](ctx)  # by the registry: the matmul rule itself reads this module's routing
    return Fallback(ctx.out, [ctx.val(t) for t in ctx.tensor_args], "grouped matmul of this layout")


def selected_product(ctx: Ctx) -> Op | None:
    """``bmm(W[idx], x)`` or ``bmm(x, W[idx])`` with ``idx`` computed (one expert matrix per row), else None."""
    try:
        parts = _parts(ctx.traced, ctx.node)
    except Exception:
        return None
    return _op(ctx, parts) if parts is not None else None

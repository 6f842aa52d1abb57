"""Links between the unit spaces of an op that has no weights of its own (activations, views, pooling,
norms, products), found by probing the op's lowering rule: :func:`link_edges` adds them to the network of
:func:`connectome.network.to_networkx`, and :func:`decode` reads which probed unit reaches which unit
from a handful of binary probes. Kept apart from :mod:`connectome.network` for size: this is the one
part of it that runs rules; with the helpers on (nested) tuple-valued statuses it uses.

Examples
--------
>>> import numpy as np
>>> perm = np.array([2, 0, 1])                            # probed unit i reaches read unit perm[i]
>>> src, dst = decode(lambda sel: sel[np.argsort(perm)], 3)
>>> sorted(zip(src.tolist(), dst.tolist()))
[(0, 2), (1, 0), (2, 1)]
>>> at((Status.uniform((2, 3), 1, True), (None, 7)), (1, 1))
7
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from .graph.lower.base import Op
from .graph.status import Status

if TYPE_CHECKING:
    import networkx
    from torch import fx

    from .graph.walk import Walk

__all__ = ["Path", "Space", "link_edges", "decode", "leaves", "at"]

ONE_HOT_LIMIT = 256  # channels past which a link that is not one-to-one is made all-to-all, unprobed

Path = tuple[int, ...]  # where a tensor sits inside a (nested) tuple-valued node's value
Space = tuple[Path, str, Status]  # one unit space: its path, its name, its forward status laid out by units


def link_edges(g: networkx.DiGraph, w: Walk, n: fx.Node, op: Op, spaces: dict[fx.Node, list[Space]]) -> None:
    """Add to ``g`` the ``kind="link"`` edges of node ``n`` (op ``op``) of the walk ``w``: from each unit of
    its inputs' spaces to the units of its own that the probes find it reaches."""
    args, outs = w.graph.args[n], spaces[n]
    ins = [(k, path, name, s) for k, a in enumerate(args) for path, name, s in spaces.get(a, [])]
    i_first = np.cumsum([0] + [s.channels for *_, s in ins])  # units numbered across all inputs' spaces
    o_first = np.cumsum([0] + [o.channels for *_, o in outs])  # and across all outputs' spaces
    if not i_first[-1] or not o_first[-1]:
        return
    base, codes = [_dead(w.fwd.get(a)) for a in args], []
    if op.couples and len(args) > 1:  # a product: what one factor does depends on the others' real state
        real, out = [w.fwd.get(a) for a in args], w.fwd.get(n)
        dst, src = decode(partial(_backward, op, real, out, ins, outs, o_first), int(o_first[-1]))
        codes.append(src * o_first[-1] + dst)
    else:
        for j, (k, path, _, s) in enumerate(ins):
            src, dst = decode(partial(_forward, op, base, k, path, s, outs), s.channels)
            codes.append((src + i_first[j]) * o_first[-1] + dst)
    src, dst = np.divmod(np.unique(np.concatenate(codes)), o_first[-1])
    si, so = np.searchsorted(i_first, src, side="right") - 1, np.searchsorted(o_first, dst, side="right") - 1
    attrs = {"kind": "link", "op": n.name, "weights": tuple(k for wt in op.weights for k in wt.keys)}
    g.add_edges_from(
        ((ins[a][2], int(i - i_first[a])), (outs[b][1], int(o - o_first[b])), attrs)
        for i, o, a, b in zip(src, dst, si, so)
    )


def decode(run: Callable[[np.ndarray], np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (probed unit, read unit) of ``run``, from a selection of ``n`` units to the read units.

    Binary probes: a read unit reached by exactly one probed unit is reached with the units whose bit ``b``
    is 1 or with those where it is 0, not both, and its bits spell that unit. Read units reached by several
    are probed one unit at a time (up to ``ONE_HOT_LIMIT`` units), else joined to all of them."""
    units = np.arange(n)
    full = run(units >= 0)
    src, single = np.zeros(len(full), np.int64), full.copy()
    for b in range(max(1, math.ceil(math.log2(max(n, 1))))):
        hi, lo = run((units >> b) & 1 == 1), run((units >> b) & 1 == 0)
        single &= hi ^ lo
        src |= hi.astype(np.int64) << b
    single &= src < n
    found = [(src[single], np.nonzero(single)[0])]
    many = full & ~single
    if many.any() and n <= ONE_HOT_LIMIT:
        got = np.zeros_like(many)
        for c in range(n):
            hit = run(units == c) & many
            found.append((np.full(int(hit.sum()), c), np.nonzero(hit)[0]))
            got |= hit
        many &= ~got
    rest = np.nonzero(many)[0]  # reached only by several units together, or not probed: by all of them
    found.append((np.repeat(units, len(rest)), np.tile(rest, n)))
    return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])


def _forward(op: Op, base: list[Any], k: int, path: Path, s: Status, outs: list[Space], sel: np.ndarray) -> np.ndarray:
    """The output units alive when only the units ``sel`` of input ``k`` are, the other inputs dead but
    nonzero: at their live positions, or at every position for a unit dead from the inputs."""
    if not sel.any():
        return np.zeros(sum(o.channels for *_, o in outs), bool)
    table = np.concatenate([s.table, np.ones((1, s.table.shape[1]), bool)])
    idx = np.where(sel, np.where(s.idx >= 0, s.idx, len(s.table)), -1)
    ins = list(base)
    ins[k] = _put(base[k], path, Status.from_table(table, idx, s.shape, s.cdim).with_zero(False))
    try:
        out = op.forward(ins)
    except Exception:  # a rule written for the walk's values may reject a probe: every unit is reached
        return np.ones(sum(o.channels for *_, o in outs), bool)
    return np.concatenate([_units(at(out, p), o) for p, _, o in outs])


def _backward(
    op: Op, real: list[Any], out: Any, ins: list, outs: list[Space], o_first: np.ndarray, sel: np.ndarray
) -> np.ndarray:
    """The input units alive to the outputs when only the output units ``sel`` are (everywhere), the
    inputs as the walk found them."""
    grad = _none_like(out)
    for j, (p, _, o) in enumerate(outs):
        part = sel[o_first[j] : o_first[j + 1]]
        if part.any():
            row = np.ones((1, o.table.shape[1]), bool)
            grad = _put(grad, p, Status.from_table(row, np.where(part, 0, -1), o.shape, o.cdim))
    try:
        back = tuple(op.backward(real, out, grad)) if sel.any() else ()
    except Exception:
        return np.ones(sum(s.channels for *_, s in ins), bool)
    return np.concatenate([_units(at(back, (k, *p)), s) for k, p, _, s in ins])


def _units(v: Any, like: Status) -> np.ndarray:
    return (
        v.with_cdim(like.cdim).alive_units()
        if isinstance(v, Status) and v.shape == like.shape
        else np.zeros(like.channels, bool)
    )


def leaves(v: Any, path: Path = ()) -> list[tuple[Path, Status]]:
    """The statuses inside a (nested) tuple-valued status, each with its path."""
    if isinstance(v, tuple):
        return [leaf for i, x in enumerate(v) for leaf in leaves(x, path + (i,))]
    return [(path, v)] if isinstance(v, Status) else []


def at(v: Any, path: Path) -> Any:
    """What sits at ``path`` inside a (nested) tuple; None where the path leads nowhere."""
    return v if not path else at(v[path[0]], path[1:]) if isinstance(v, tuple) and path[0] < len(v) else None


def _put(v: Any, path: Path, x: Status) -> Any:
    return x if not path else tuple(_put(y, path[1:], x) if i == path[0] else y for i, y in enumerate(v))


def _none_like(v: Any) -> Any:
    return tuple(_none_like(x) for x in v) if isinstance(v, tuple) else None


def _dead(v: Any) -> Any:
    """Every element dead from the inputs but nonzero: a constant that lets a product pass the probe."""
    if isinstance(v, tuple):
        return tuple(_dead(x) for x in v)
    return Status.uniform(v.shape, v.cdim, False).with_zero(False) if isinstance(v, Status) else v

"""The unit graph as data: per layer, a sparse matrix of effective weights between units; for the model,
a :class:`networkx.DiGraph` of units joined by effective weights and by the ops between the layers.

Examples
--------
>>> import torch, connectome
>>> m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
>>> with torch.no_grad(): _ = m[2].weight[0, 1].zero_()      # hidden unit 1 reaches no output
>>> res = connectome.analyze(m, input_shape=(1, 3))
>>> unit_matrices(res)["0.weight"].toarray()[1].tolist()      # so the weights into it do nothing
[0.0, 0.0, 0.0]
>>> to_networkx(res).nodes["_0", 1]["status"]
'dead-to-output'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import fx, nn

from .graph.lower.base import Op
from .graph.lower.mixing import Mixing
from .graph.status import Status, any_alive
from .graph.walk import Walk
from .io.masks import MaskSource
from .netlinks import Space, at, leaves, link_edges

if TYPE_CHECKING:
    import networkx
    import scipy.sparse

    from .analysis import Analysis

__all__ = ["unit_matrices", "to_networkx", "STATUSES"]

STATUSES = ("alive", "dead-from-input", "dead-to-output", "dead")
"""A unit's ``status`` node attribute: alive both ways, only to the outputs, only from the inputs, neither."""


# ---- unit matrices ------------------------------------------------------------------------------
def unit_matrices(res: Analysis, model: nn.Module | None = None) -> dict[str, scipy.sparse.csr_array]:
    """Per prunable weight, the ``(units_out, units_in)`` sparse matrix of its effective weights.

    Entry ``[o, i]`` is ``sum |w| * effective`` over the weights joining input unit ``i`` to output unit
    ``o`` (conv taps, recurrent gates): absolute values, so that no two cancel, and the stored entries are
    exactly the pairs that some effective weight joins (0 only where explicit masks keep zero weights).
    Layouts: linear, conv, transposed conv ``(out, in)`` (conv groups spread out: output ``o`` of group
    ``g`` reads input ``g * in_per_group + i``); embedding ``(dim, vocab)``; recurrent ``(hidden, in)``,
    the gates summed; others ``(shape[0], shape[1])``, the rest summed. Weights under 2-D are left out.
    Only effective entries are read: O(nnz).

    Parameters
    ----------
    res : Analysis
        The result of :func:`connectome.analyze`.
    model : nn.Module, optional
        Where to read the weights' values; default: the model ``res`` was computed for.

    Returns
    -------
    dict of str to scipy.sparse.csr_array
        Keyed as ``res.effective_masks``, float64.

    Examples
    --------
    >>> import torch, connectome
    >>> m = torch.nn.Sequential(torch.nn.Conv2d(4, 2, 3, groups=2, padding=1))
    >>> with torch.no_grad(): _ = m[0].weight.fill_(-0.5)
    >>> unit_matrices(connectome.analyze(m, input_shape=(1, 4, 5, 5)))["0.weight"].toarray().tolist()
    [[4.5, 4.5, 0.0, 0.0], [0.0, 0.0, 4.5, 4.5]]
    """
    import scipy.sparse

    source = _source(res, model)
    ops = (
        {k: op for op in reversed(list(res.walk.graph.ops.values())) for wt in op.weights for k in wt.keys}
        if res.walk is not None
        else {}
    )  # reversed: the first op that reads a weight wins
    out = {}
    for key, eff in res.effective_masks.items():
        if eff.dim() < 2:
            continue
        flat = np.flatnonzero(eff.contiguous().numpy())  # only effective entries are read: O(nnz)
        a, b, _ = np.unravel_index(flat, tuple(eff.reshape(eff.shape[0], eff.shape[1], -1).shape))
        rows, cols, shape = _place(key, res.kinds.get(key, ""), a, b, tuple(eff.shape), ops.get(key), source)
        w = source.weight(key)
        v = _abs_at(w, flat) if isinstance(w, torch.Tensor) and w.shape == eff.shape else None
        v = v if v is not None else np.ones(len(flat))  # no values to read: each effective weight counts 1
        out[key] = scipy.sparse.csr_array((v, (rows, cols)), shape=shape)  # sums the taps of each pair
    return out


def _place(
    key: str, kind: str, a: np.ndarray, b: np.ndarray, shape: tuple, op: Op | None, source: MaskSource
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Rows and columns of the weight entries ``[a, b, ...]`` in the unit matrix, and its shape."""
    A, B = shape[0], shape[1]
    try:
        module: nn.Module | None = source.model.get_submodule(key.rpartition(".")[0])
    except AttributeError:
        module = None
    groups = int(getattr(op, "groups", None) or getattr(module, "groups", 1) or 1)
    if kind.startswith("convT"):  # (in, out/groups, *k): input a lies in group a // (in/groups)
        return (a // (A // groups)) * B + b, a, (B * groups, A)
    if kind.startswith("conv"):  # (out, in/groups, *k): output a lies in group a // (out/groups)
        return a, (a // (A // groups)) * B + b, (A, B * groups)
    if kind == "embedding":  # (vocab, dim): a lookup is a linear map from one-hot ids
        return b, a, (B, A)
    recurrent = kind == "recurrent" and isinstance(module, nn.RNNBase) and ".weight_hr" not in key
    hidden = int(getattr(module, "hidden_size", 0)) if recurrent else 0  # gates: blocks of ``hidden`` rows
    if hidden and A % hidden == 0:
        return a % hidden, b, (hidden, B)
    return a, b, (A, B)


def _source(res: Analysis, model: nn.Module | None) -> MaskSource:
    if model is not None:
        return MaskSource(model)
    if res.walk is not None and res.walk.graph.masks is not None:
        return res.walk.graph.masks
    raise ValueError("this Analysis keeps no model to read weights from: pass model=")


# ---- the network of units -----------------------------------------------------------------------
def to_networkx(res: Analysis, model: nn.Module | None = None) -> networkx.DiGraph:
    """The network of units: a node per unit of each tensor, an edge per effective connection.

    **Nodes** are ``(tensor, unit)``: ``tensor`` names the fx node that computes the tensor (an input's
    placeholder, a layer's output; slot ``k`` of a tuple-valued node is ``"name[k]"``), ``unit`` is its
    channel or feature (positions and tokens are folded into units). Attributes: ``tensor``, ``unit``,
    ``layer`` (module path, else node name), ``kind`` (``"input"``, a layer's weight kind, else ``"op"``),
    the walk's ``alive_from_input`` and ``alive_to_output``, and ``status`` (:data:`STATUSES`).
    Parameters and constants are not units; ``graph["inputs"]``/``graph["outputs"]`` name the model's
    input and output tensors.

    **Edges.** A linear or conv layer joins input to output units by its *effective* weights only (those
    of that call): ``kind="weight"``, ``layer`` (the key in ``res.effective_masks``), ``op``, ``weight``
    (``sum |w|`` over the effective taps, as in :func:`unit_matrices`). Any other op (activations,
    BatchNorm, pooling, views, flatten, add, cat; attention, embeddings, recurrent layers) gets
    ``kind="link"`` edges (``op``, and ``weights``: the keys it reads), found by running its lowering
    rule on probes: ``i`` links to ``o`` if ``i``'s live positions (every position for a unit dead from
    the inputs) reach ``o``, the op's other inputs dead but nonzero; in a product, if ``i`` reaches the
    outputs through ``o`` with the other factors as the walk found them. So a flatten of ``C x H x W``
    links channel ``f // (H * W)`` to feature ``f``, a LayerNorm links all-to-all, and so does any op
    that is not one-to-one on over 256 units (conservative: probing unit by unit would cost too much).

    A unit on a path from an input unit to an output unit is alive both ways, and an alive unit is on one
    unless its live positions from the inputs never reach the outputs (a channel alive only at borders
    that a flatten or slice drops). Exact on MLPs and CNNs; elsewhere conservative links may join more.

    Parameters
    ----------
    res : Analysis
        The result of :func:`connectome.analyze`.
    model : nn.Module, optional
        Where to read the weights' values; default: the model ``res`` was computed for.

    Examples
    --------
    >>> import torch, connectome, networkx as nx
    >>> m = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(8, 1))
    >>> with torch.no_grad(): _ = m[2].weight[:, 4:].zero_()     # channel 1 reaches no output
    >>> g = to_networkx(connectome.analyze(m, input_shape=(1, 1, 4, 4)))
    >>> sorted(g.successors(("_0", 1)))                             # 2x2 positions of channel 1
    [('_1', 4), ('_1', 5), ('_1', 6), ('_1', 7)]
    >>> [g.nodes[n]["status"] for n in [("_0", 0), ("_0", 1)]]
    ['alive', 'dead-to-output']
    >>> sorted(n for n in nx.ancestors(g, ("_2", 0)) if n[0] == "_0")
    [('_0', 0)]

    Notes
    -----
    One pass over each layer's effective taps; ``1 + 2 * ceil(log2 C)`` runs of a rule per ``C`` units.
    """
    import networkx as nx

    w = res.walk
    if w is None:
        raise ValueError("this Analysis keeps no walk: run connectome.analyze")
    source, spaces, t = _source(res, model), _spaces(w), w.graph.traced
    g = nx.DiGraph(
        inputs=[name for n in t.inputs for _, name, _ in spaces.get(n, [])],
        outputs=[name for n in t.outputs for _, name, _ in spaces.get(n, [])],
    )
    for n, sp in spaces.items():
        layer, kind = _describe(res.kinds, w, n)
        for path, name, s in sp:
            f = s.alive_units()
            back = at(w.bwd.get(n), path)
            b = back.with_cdim(s.cdim).alive_units() if isinstance(back, Status) else np.zeros_like(f)
            state = np.where(f, np.where(b, 0, 2), np.where(b, 1, 3))
            g.add_nodes_from(
                (
                    (name, u),
                    {
                        "tensor": name,
                        "unit": u,
                        "layer": layer,
                        "kind": kind,
                        "alive_from_input": bool(f[u]),
                        "alive_to_output": bool(b[u]),
                        "status": STATUSES[state[u]],
                    },
                )
                for u in range(len(f))
            )
    for n, op in w.graph.ops.items():
        if n not in spaces or n in t.inputs:
            continue
        args = w.graph.args[n]
        if isinstance(op, Mixing) and _plain_mixing(op, args, spaces, spaces[n]):
            _weight_edges(g, w, n, op, spaces[args[0]][0][1], spaces[n][0][1], source)
        else:
            link_edges(g, w, n, op, spaces)
    return g


def _spaces(w: Walk) -> dict[fx.Node, list[Space]]:
    """The unit spaces of every node the inputs flow into, laid out by the units of the layers around them."""
    t, ops, args = w.graph.traced, w.graph.ops, w.graph.args
    cdim: dict[fx.Node, int] = {}
    for n, op in ops.items():  # a linear or conv layer fixes the units of its output, then of its input
        if isinstance(op, Mixing) and op.weights:
            cdim.update({m: cdim.get(m, op.cdim) for m in [n] + args[n][:1]})
    inputs = set(t.inputs)
    spaces: dict[fx.Node, list[Space]] = {}
    for n in t.graph.nodes:
        if n not in inputs and not args.get(n):  # parameters, constants, ops that read no tensor
            continue
        found = [
            (
                path,
                n.name + "".join(f"[{k}]" for k in path),
                s.with_cdim(cdim[n]) if not path and n in cdim and s.shape else s,
            )
            for path, s in leaves(w.fwd.get(n))
        ]
        if found:
            spaces[n] = found
    return spaces


def _describe(kinds: dict[str, str], w: Walk, n: fx.Node) -> tuple[str, str]:
    """The ``layer`` and ``kind`` node attributes of the units of node ``n``."""
    op = w.graph.ops.get(n)
    if op is None:
        return n.name, "input"
    keys = [k for wt in op.weights for k in wt.keys]
    layer = str(n.target) if n.op == "call_module" else (keys[0].removesuffix(".weight") if keys else n.name)
    return layer, kinds.get(keys[0], "op") if keys else "op"


def _plain_mixing(op: Mixing, args: list[fx.Node], spaces: dict[fx.Node, list[Space]], out: list[Space]) -> bool:
    """A linear or conv layer between two unit spaces laid out along its own channel dim."""
    src = spaces.get(args[0], []) if len(args) == 1 else []
    return (
        len(op.weights) == 1
        and len(src) == 1
        and len(out) == 1
        and not src[0][0]
        and not out[0][0]
        and src[0][2].cdim == op.cdim == out[0][2].cdim
        and out[0][2].channels == op.out_channels
        and src[0][2].channels == op.conn.shape[1] * op.groups
    )


def _weight_edges(g: networkx.DiGraph, w: Walk, n: fx.Node, op: Mixing, src: str, dst: str, source: MaskSource) -> None:
    args, grad = w.graph.args[n], w.bwd.get(n)
    ins: list[Any] = [w.fwd.get(a) for a in args]
    eff = op.effective_conn(ins, grad if any_alive(grad) else None)  # (O, Ig, T)
    _, ig, T = eff.shape
    q = np.flatnonzero(eff.contiguous().numpy())
    o, rest = np.divmod(q, ig * T)
    pairs, inverse = np.unique(o * ig + rest // T, return_inverse=True)
    per_pair = np.bincount(inverse.ravel(), weights=_conn_values(op, source, q), minlength=len(pairs))
    o, j = np.divmod(pairs, ig)
    i = (o // (op.out_channels // op.groups)) * ig + j
    key = op.weights[0].name
    g.add_edges_from(
        ((src, int(a)), (dst, int(b)), {"kind": "weight", "layer": key, "op": n.name, "weight": float(v)})
        for a, b, v in zip(i, o, per_pair)
    )


def _conn_values(op: Mixing, source: MaskSource, q: np.ndarray) -> np.ndarray:
    """``|w|`` at the flat indices ``q`` of the op's ``conn`` (output channel, group slot, tap); ones where
    the operand is computed from parameters (``s * W``, a standardised ``W``): each effective tap counts 1."""
    wt, conn = op.weights[0], op.conn
    p = source.weight(wt.name) if wt.backmap is None and len(wt.keys) == 1 else None
    if isinstance(p, torch.Tensor) and wt.mask.numel() == conn.numel():
        if conn.data_ptr() == wt.mask.data_ptr() and conn.is_contiguous() and wt.mask.is_contiguous():
            pos = q  # conn is the operand reshaped: the same flat order
        else:  # to_param moves conn-shaped tensors to the operand's layout: invert it
            slot = op.to_param(torch.arange(conn.numel()).reshape(conn.shape)).reshape(-1).numpy()
            pos = np.argsort(slot)[q]  # the inverse of a permutation
        v = _abs_at(p, wt.index.reshape(-1).numpy()[pos] if wt.index is not None else pos)
        if v is not None:
            return v
    return np.ones(len(q))


def _abs_at(w: torch.Tensor, flat: np.ndarray) -> np.ndarray | None:
    """``|w|`` at flat indices, as float64 (None for a tensor without values: on the meta device)."""
    if w.device.type == "meta" or (len(flat) and int(flat.max()) >= w.numel()):
        return None
    picked = w.detach().reshape(-1)[torch.from_numpy(np.ascontiguousarray(flat, dtype=np.int64)).to(w.device)]
    return picked.to("cpu", torch.float64).abs().numpy()

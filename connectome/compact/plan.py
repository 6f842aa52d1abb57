"""What to remove: a class of channels goes when none of its elements is both alive-from-input and
alive-to-output, and every constant it sends into a layer can be folded into that layer's bias.

A channel that no output depends on is removed as it is. A channel that no input reaches holds a
constant (its biases, through activations and norms); where such a channel enters a convolution or a
linear layer that an output depends on, its constant is added to that layer's bias: ``W[:, c] * v``
summed over the kernel. That is exact only if the constant is the same at every position and the layer
never reads padding in its place (a convolution without padding, or a linear layer); a zero constant
needs no fold at all. A class whose constant cannot be folded exactly is kept.

Examples
--------
>>> import torch
>>> from torch import nn
>>> from connectome.analysis import analyze
>>> m = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)).eval()
>>> with torch.no_grad(): _ = m[0].weight[1].zero_(); _ = m[0].bias.fill_(0.5)
>>> res = analyze(m, input_shape=(1, 2), tracer="fx")
>>> p = plan(res, m, torch.zeros(1, 2, dtype=torch.float64))
>>> p.keep["0"].out.tolist(), p.folds["2"].tolist() == (m[2].weight[:, 1] * 0.5).double().tolist()
([0, 2], True)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from .channels import PIN, Channels, Layer

__all__ = ["Keep", "Plan", "clone", "plan"]


@dataclass
class Keep:
    """The channels a layer keeps: of its input (``inp``, None when not sliced) and of its output."""

    inp: np.ndarray | None
    out: np.ndarray
    units_in: int
    units_out: int
    rows: np.ndarray | None = None  # of ``out``, the rows the layer computes (the others are filled in)
    fills: np.ndarray | None = None  # the constant of each channel of ``out`` not in ``rows``
    in_rows: np.ndarray | None = None  # grouped, with ``rows``: the input channels still read


@dataclass
class Plan:
    """Per sliced layer, what it keeps; per consumer layer, the constant to add to its bias."""

    channels: Channels
    keep: dict[str, Keep]
    folds: dict[str, torch.Tensor]  # layer -> float64 vector over its output channels (before slicing)
    kept_constant: int = 0  # classes kept because their constant could not be folded
    pinned: dict[str, str] = field(default_factory=dict)


def clone(model: nn.Module) -> nn.Module:
    """A deep copy; a pruned weight (computed by its hook from ``weight_orig`` and the mask, so not a
    leaf that ``deepcopy`` can copy) is copied as its value, and computed again at the next call."""
    memo: dict[int, object] = {}
    for mod in model.modules():
        for value in vars(mod).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)


def _alive(status: Any, shape: tuple) -> np.ndarray:
    if status is None or not hasattr(status, "full"):
        return np.zeros(shape, bool) if status is None else np.ones(shape, bool)
    return status.full().reshape(shape)


def _values(channels: Channels, model: nn.Module, inputs: tuple, nodes: set[fx.Node]) -> dict[fx.Node, Any]:
    """The float64 values of ``nodes`` on ``inputs``."""
    gm = fx.GraphModule(clone(channels.root).double(), channels.graph)
    got: dict[fx.Node, Any] = {}

    class Run(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            v = super().run_node(n)
            if n in nodes:
                got[n] = v.detach() if isinstance(v, torch.Tensor) else v
            return v

    with torch.no_grad():
        Run(gm).run(*inputs)
    return got


def plan(analysis: Any, model: nn.Module, inputs: Any, keep_one: bool = False, align: int = 1) -> Plan:
    """Decide what to remove from ``model`` given its ``analysis`` (fx-traced); ``inputs`` (float64) are
    run once to read the constants of channels no input reaches. With ``keep_one``, every layer keeps at
    least one channel and one row (for graphs where an op cannot take a tensor with no channel). With
    ``align``, every layer keeps a multiple of ``align`` channels (or all of them), dead ones added back
    as needed, and computes every row it keeps: CPU kernels run faster on such widths."""
    ch = Channels.build(analysis)
    fwd, bwd = analysis.walk.fwd, analysis.walk.bwd
    n = len(ch.union.parent)
    useful = np.zeros(n, bool)  # per class root: some element alive on both sides
    useful[PIN] = True
    for node, ids in ch.ids.items():
        if not isinstance(ids, torch.Tensor) or node not in fwd:
            continue
        shape = tuple(ids.shape)
        both = _alive(fwd.get(node), shape) & _alive(bwd.get(node), shape)
        if both.any():
            useful[ch.union.roots(np.unique(ids.numpy()[both]))] = True
    roots = ch.union.roots(np.arange(n))
    kept = useful[roots]  # per id
    # constants entering a layer that something needs: folded, or their class is kept
    cuts = [layer for layer in ch.layers.values() if layer.kind == "cut"]
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    wanted = {x for layer in cuts for x, _ in layer.calls if x is not None}
    trims = [layer for layer in ch.layers.values() if layer.kind in ("cut", "grouped") and len(layer.calls) == 1]
    wanted |= {layer.calls[0][1] for layer in trims}
    values = _values(ch, model, inputs, wanted)
    refused = 0
    while True:  # keeping a class only removes folds and empty layers: this ends
        kept = useful[roots]
        # with keep_one, a layer keeps at least one channel: its first, dead as it is
        empty = [int(layer.out_classes(ch)[0]) for layer in ch.layers.values() if not kept[layer.out_classes(ch)].any()]
        if empty and keep_one:
            useful[empty] = True
            continue
        if align > 1 and _align(ch, useful, align):
            continue
        folds: dict[str, torch.Tensor] = {}
        bad: set[int] = set()
        for layer in cuts:
            fold, refuse = _fold(ch, layer, kept, roots, fwd, bwd, values)
            bad |= refuse
            if fold is not None:
                folds[layer.target] = fold
        if not bad:
            break
        useful[list(bad)] = True
        refused += len(bad)
    keep = {}
    for layer in ch.layers.values():
        out = kept[layer.out_classes(ch)]
        inp = kept[layer.in_classes(ch)] if layer.kind == "cut" else None
        keep[layer.target] = Keep(
            None if inp is None else np.flatnonzero(inp),
            np.flatnonzero(out),
            len(inp) if inp is not None else 0,
            len(out),
        )
        if layer in trims and align == 1:
            _trim(keep[layer.target], layer, fwd, bwd, values, keep_one)
    return Plan(ch, keep, folds, refused, dict(ch.pinned_by))


def _align(ch: Channels, useful: np.ndarray, align: int) -> bool:
    """Add back removed classes until every layer keeps a multiple of ``align`` channels; whether any was."""
    changed = False
    for layer in ch.layers.values():
        classes = layer.out_classes(ch)
        kept = useful[classes]
        want = min(len(classes), -(-int(kept.sum()) // align) * align)
        for c in classes[~kept]:
            if int(useful[classes].sum()) >= want:
                break
            useful[c] = changed = True
    return changed


def _fold(ch: Channels, layer: Layer, kept: np.ndarray, roots: np.ndarray, fwd, bwd, values) -> tuple:
    """The bias increment of ``layer`` from the removed constant channels it reads, and the classes whose
    constant cannot be folded exactly (it varies over positions or calls, or meets padding)."""
    classes = layer.in_classes(ch)
    constants: dict[int, list[torch.Tensor]] = {}  # removed channel -> its values, per call that needs it
    for x, _ in layer.calls:
        assert x is not None
        shape = tuple(ch.ids[x].shape)
        needed = _alive(bwd.get(x), shape) & ~_alive(fwd.get(x), shape)
        need = np.moveaxis(needed, layer.in_dim, 0).reshape(shape[layer.in_dim], -1).any(1)
        val = values[x].movedim(layer.in_dim, 0).reshape(shape[layer.in_dim], -1)
        for i in np.flatnonzero(need & ~kept[classes]).tolist():
            constants.setdefault(i, []).append(val[i])
    fold: torch.Tensor | None = None
    bad: set[int] = set()
    w: torch.Tensor | None = None
    for c, vs in constants.items():
        v = torch.cat(vs)
        if bool((v == 0).all()):
            continue
        if float(v.max() - v.min()) > 1e-12 * max(1.0, float(v.abs().max())) or _pads(layer.module):
            bad.add(int(roots[classes[c]]))
            continue
        if w is None:
            w = layer.module.weight.detach().double()
        col = w[:, c].reshape(w.shape[0], -1).sum(1) * float(v[0])
        fold = col if fold is None else fold + col
    return fold, bad


def _pads(mod: nn.Module) -> bool:
    """Whether a convolution reads padding (where a constant channel would read zeros)."""
    pad = getattr(mod, "padding", 0)
    if isinstance(pad, str):
        return pad != "valid"
    return any(p != 0 for p in (pad if isinstance(pad, tuple) else (pad,)))


def _trim(keep: Keep, layer: Layer, fwd, bwd, values, keep_one: bool) -> None:
    """Rows of a layer whose channels stay (their class lives elsewhere) but which are themselves dead:
    not computed, their channel filled with zero (no output needs it) or with its constant."""
    y = layer.calls[0][1]
    shape = tuple(values[y].shape)
    dim = layer.out_dim % len(shape)

    def per_channel(a: np.ndarray) -> np.ndarray:
        return np.moveaxis(a, dim, 0).reshape(shape[dim], -1)

    live, needed = per_channel(_alive(fwd.get(y), shape)), per_channel(_alive(bwd.get(y), shape))
    val = values[y].movedim(dim, 0).reshape(shape[dim], -1)
    fill: dict[int, float] = {}
    for c in keep.out:
        if (live[c] & needed[c]).any():
            continue
        if not needed[c].any():
            fill[c] = 0.0
        elif float(val[c].max() - val[c].min()) <= 1e-12 * max(1.0, float(val[c].abs().max())):
            fill[c] = float(val[c][0])
    if layer.kind == "grouped":  # a group (its input channels and its outputs) goes whole, or stays
        per = layer.module.out_channels // layer.module.groups
        width = layer.module.in_channels // layer.module.groups
        groups = sorted({int(c) // per for c in keep.out})
        gone = {g for g in groups if all(c in fill for c in range(g * per, (g + 1) * per))}
        fill = {c: v for c, v in fill.items() if c // per in gone}
        left = [i for i, g in enumerate(groups) if g not in gone]
        keep.in_rows = np.asarray([i * width + j for i in left for j in range(width)], np.int64)
    rows = [int(c) for c in keep.out if c not in fill]
    if fill and (rows or not keep_one):
        keep.rows = np.asarray(rows, np.int64)
        keep.fills = np.asarray([fill[c] for c in keep.out if c in fill], np.float64)
    else:
        keep.in_rows = None

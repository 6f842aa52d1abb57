"""Edits of the traced graph around a sliced layer: channels put back as constants, and stand-ins for
layers left with nothing to compute.

A layer whose channel stays (its class lives elsewhere) but whose own row is dead computes only the
rows left; after its call, ``cat([y, constants])[perm]`` puts the others back, the constants made the
shape of ``y`` by ``zeros_like`` (ops the analysis reads as constants, so the compacted model analyses
clean). A layer left with no row at all is replaced by a *stand-in*: the same convolution (or linear
map) with a zero weight of one output, kept as a buffer, not a parameter: it gives the shape of the
layer's output, to which the constants are added, or which is narrowed to no channel when nothing of
the layer stays. A batch norm left with no channel passes its (empty) input on.

Examples
--------
>>> import numpy as np, torch
>>> from torch import fx, nn
>>> gm = fx.symbolic_trace(nn.Sequential(nn.Linear(2, 3)))
>>> lin, call = gm.get_submodule("0"), list(gm.graph.nodes)[1]
>>> lin.weight.data, lin.bias.data = lin.weight.data[[0, 2]], lin.bias.data[[0, 2]]  # row 1 goes: it holds 7
>>> keep = Keep(np.arange(2), np.arange(3), 2, 3, rows=np.array([0, 2]), fills=np.array([7.0]))
>>> fill_in(gm, Layer("0", "cut", lin, [(None, call)], -1, -1), keep)
>>> _ = gm.recompile(); gm(torch.zeros(1, 2))[0, 1].item()
7.0
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from .channels import Layer
from .plan import Keep

__all__ = ["fill_in", "stand_in"]

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _node(gm: fx.GraphModule, layer: Layer, call: int = 0) -> fx.Node:
    return next(n for n in gm.graph.nodes if n.name == layer.calls[call][1].name)


def _fill(gm: fx.GraphModule, layer: Layer, keep: Keep, dtype: torch.dtype) -> fx.Node:
    """A get_attr of the constants of the channels ``keep`` fills, shaped to broadcast over ``y``."""
    assert keep.fills is not None
    fill = torch.tensor(keep.fills, dtype=dtype)
    if layer.out_dim != -1:  # a channel dim before the spatial ones: the constants broadcast over them
        fill = fill.reshape([-1] + [1] * _spatial(layer))
    name = layer.target.replace(".", "_") + "_fill"
    gm.register_buffer(name, fill)
    return gm.graph.get_attr(name)


def fill_in(gm: fx.GraphModule, layer: Layer, keep: Keep) -> None:
    """After the layer's call (computing ``keep.rows``), the channels of ``keep.out`` it no longer
    computes, put back in their places."""
    assert keep.rows is not None
    y = _node(gm, layer)
    name = layer.target.replace(".", "_")
    order = {c: i for i, c in enumerate(keep.rows)}
    missing = [c for c in keep.out if c not in order]
    order.update({c: len(keep.rows) + i for i, c in enumerate(missing)})
    gm.register_buffer(f"{name}_perm", torch.tensor([order[c] for c in keep.out], dtype=torch.long))
    dim = layer.out_dim
    g = gm.graph
    with g.inserting_before(y.next):  # (before the next node: one after another, in order)
        first = g.call_function(torch.narrow, (y, dim, 0, 1))
        zeros = g.call_function(torch.zeros_like, (first,))
        block = g.call_function(operator.add, (zeros, _fill(gm, layer, keep, _dtype(gm, layer))))
        both = g.call_function(torch.cat, ([y, block], dim))
        full = g.call_function(torch.index_select, (both, dim, g.get_attr(f"{name}_perm")))
    y.replace_all_uses_with(full, delete_user_cb=lambda user: user not in (first, both))
    if keep.in_rows is not None:  # a grouped convolution reads only the channels of its groups left
        gm.register_buffer(f"{name}_in", torch.as_tensor(keep.in_rows, dtype=torch.long))
        x = y.args[0]
        with g.inserting_before(y):
            sub = g.call_function(torch.index_select, (x, 1, g.get_attr(f"{name}_in")))
        y.replace_input_with(x, sub)  # type: ignore[arg-type]


def stand_in(gm: fx.GraphModule, layer: Layer, keep: Keep) -> None:
    """Replace every call of a layer that keeps no row: by its constants where channels stay, else by an
    empty tensor of its output's shape; the module goes."""
    for call in range(len(layer.calls)):
        _stand_in(gm, layer, keep, _node(gm, layer, call))
    gm.delete_submodule(layer.target)


def _stand_in(gm: fx.GraphModule, layer: Layer, keep: Keep, y: fx.Node) -> None:
    x = y.args[0]
    g = gm.graph
    mod: Any = layer.module
    name = layer.target.replace(".", "_")
    dtype = _dtype(gm, layer)
    with g.inserting_before(y):
        if layer.kind == "norm":
            out: Any = x
        else:
            # one zero channel, whatever the input still has (a convolution of no channel makes none)
            spatial = 0 if isinstance(mod, nn.Linear) else len(mod.kernel_size)
            dim = -1 if isinstance(mod, nn.Linear) else 1
            empty = g.call_function(torch.narrow, (x, dim, 0, 0))
            x = g.call_function(F.pad, (empty, (0, 0) * spatial + (0, 1)))
            shape = (1, 1) if isinstance(mod, nn.Linear) else (1, 1, *mod.kernel_size)
            if not hasattr(gm, f"{name}_shape"):
                gm.register_buffer(f"{name}_shape", torch.zeros(shape, dtype=dtype))
            zero = g.get_attr(f"{name}_shape")
            if isinstance(mod, nn.Linear):
                src = g.call_function(F.linear, (x, zero))
            else:
                conv = CONV[len(mod.kernel_size)]
                src = g.call_function(conv, (x, zero, None, mod.stride, mod.padding, mod.dilation))
            if len(keep.out):
                out = g.call_function(operator.add, (src, _fill(gm, layer, keep, dtype)))
            else:
                out = g.call_function(torch.narrow, (src, layer.out_dim, 0, 0))
    y.replace_all_uses_with(out)
    g.erase_node(y)


def _dtype(gm: fx.GraphModule, layer: Layer) -> torch.dtype:
    """The dtype the compacted layer computes in (the copy's, float64 while it is checked)."""
    weight = getattr(gm.get_submodule(layer.target), "weight", None)
    return weight.dtype if isinstance(weight, torch.Tensor) else torch.float32


def _spatial(layer: Layer) -> int:
    """How many dims follow the channel dim of a convolution's output."""
    mod = layer.module
    return len(mod.kernel_size) if hasattr(mod, "kernel_size") else 0

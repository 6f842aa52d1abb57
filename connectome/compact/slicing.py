"""Apply a :class:`~connectome.compact.plan.Plan`: slice every layer to the channels it keeps, add the
folded constants to the biases, and rebuild the traced graph around the smaller modules.

Examples
--------
>>> import torch
>>> from torch import nn
>>> from torch.nn.utils import prune
>>> m = nn.Linear(3, 2)
>>> _ = prune.custom_from_mask(m, "weight", torch.tensor([[1, 0, 1], [0, 0, 1]]))
>>> plain, masks = bake(m)
>>> hasattr(plain, "weight_orig"), masks[("", "weight")].tolist()
(False, [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
"""

from __future__ import annotations

import copy
import operator
from typing import Any

import numpy as np
import torch
from torch import fx, nn
from torch.nn.utils import parametrize, prune

from .channels import Layer
from .plan import Keep, Plan, clone

__all__ = ["bake", "build", "carry_masks"]


def bake(model: nn.Module) -> tuple[nn.Module, dict[tuple[str, str], torch.Tensor]]:
    """A copy of ``model`` whose pruned and parametrized weights are plain parameters (their current
    values), and the prune-form masks it had, by (module path, parameter name)."""
    plain = clone(model)
    masks: dict[tuple[str, str], torch.Tensor] = {}
    for path, mod in plain.named_modules():
        for hook in list(mod._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                name = hook._tensor_name
                masks[(path, name)] = getattr(mod, name + "_mask").detach().clone()
                prune.remove(mod, name)
        if parametrize.is_parametrized(mod):
            for name in list(mod.parametrizations.keys()):
                parametrize.remove_parametrizations(mod, name, leave_parametrized=True)
    return plain, masks


def _take(t: Any, dim: int, idx: np.ndarray) -> Any:
    """``t`` (a tensor, or None) at ``idx`` along ``dim``."""
    if t is None:
        return None
    return t.index_select(dim, torch.as_tensor(idx, dtype=torch.long, device=t.device))


def _set(mod: nn.Module, name: str, t: torch.Tensor | None, param: bool = True) -> None:
    if t is None:
        return
    t = t.detach().clone()
    if param:
        setattr(mod, name, nn.Parameter(t, requires_grad=getattr(mod, name).requires_grad))
    else:
        setattr(mod, name, t)


def _slice(mod: Any, kind: str, keep: Keep, fold: torch.Tensor | None) -> None:
    out = keep.out
    w = mod.weight
    if kind == "cut":
        if fold is not None:
            if mod.bias is None:
                mod.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device))
            with torch.no_grad():
                mod.bias += fold.to(w.dtype)
        assert keep.inp is not None
        out = keep.rows if keep.rows is not None else out
        _set(mod, "weight", _take(_take(w, 0, out), 1, keep.inp))
        _set(mod, "bias", _take(mod.bias, 0, out))
        if isinstance(mod, nn.Linear):
            mod.in_features, mod.out_features = len(keep.inp), len(out)
        else:
            mod.in_channels, mod.out_channels = len(keep.inp), len(out)
    elif kind == "depthwise":
        per = mod.out_channels // mod.groups
        out = keep.rows if keep.rows is not None else out
        _set(mod, "weight", _take(w, 0, out))
        _set(mod, "bias", _take(mod.bias, 0, out))
        mod.groups = mod.in_channels = len(out) // per
        mod.out_channels = len(out)
    elif kind == "norm":
        for name in ("weight", "bias"):
            _set(mod, name, _take(getattr(mod, name), 0, out))
        for name in ("running_mean", "running_var"):
            _set(mod, name, _take(getattr(mod, name), 0, out), param=False)
        mod.num_features = len(out)
    elif kind == "embedding":
        _set(mod, "weight", _take(w, 1, out))
        mod.embedding_dim = len(out)


def build(plan: Plan, plain: nn.Module) -> fx.GraphModule:
    """The compacted model: ``plain`` (a :func:`bake`\\ d copy, changed in place) sliced by ``plan``."""
    layers = plan.channels.layers
    with torch.no_grad():
        for target, keep in plan.keep.items():
            _slice(plain.get_submodule(target), layers[target].kind, keep, plan.folds.get(target))
    gm = fx.GraphModule(plain, copy.deepcopy(plan.channels.graph))
    for target, keep in plan.keep.items():
        if keep.rows is not None:
            _fill_in(gm, layers[target], keep)
    gm.graph.lint()
    gm.recompile()
    gm.eval()
    return gm


def _fill_in(gm: fx.GraphModule, layer: Layer, keep: Keep) -> None:
    """After the layer's call, its missing channels put back: ``cat([y, constants])[perm]`` along its
    output dim, with the constants made the shape of ``y`` by ``zeros_like`` (ops the analysis reads)."""
    assert keep.rows is not None and keep.fills is not None
    y = next(n for n in gm.graph.nodes if n.name == layer.calls[0][1].name)
    name = layer.target.replace(".", "_")
    order = {c: i for i, c in enumerate(keep.rows)}
    missing = [c for c in keep.out if c not in order]
    order.update({c: len(keep.rows) + i for i, c in enumerate(missing)})
    perm = torch.tensor([order[c] for c in keep.out], dtype=torch.long)
    weight: Any = gm.get_submodule(layer.target).weight
    fill = torch.tensor(keep.fills, dtype=weight.dtype)
    dim = layer.out_dim
    if dim != -1:  # a channel dim before the spatial ones: the constants broadcast over them
        fill = fill.reshape([-1] + [1] * _spatial(layer))
    gm.register_buffer(f"{name}_fill", fill)
    gm.register_buffer(f"{name}_perm", perm)
    with gm.graph.inserting_after(y):
        first = gm.graph.call_function(torch.narrow, (y, dim, 0, 1))
    with gm.graph.inserting_after(first):
        zeros = gm.graph.call_function(torch.zeros_like, (first,))
    with gm.graph.inserting_after(zeros):
        f = gm.graph.get_attr(f"{name}_fill")
    with gm.graph.inserting_after(f):
        block = gm.graph.call_function(operator.add, (zeros, f))
    with gm.graph.inserting_after(block):
        both = gm.graph.call_function(torch.cat, ([y, block], dim))
    with gm.graph.inserting_after(both):
        p = gm.graph.get_attr(f"{name}_perm")
    with gm.graph.inserting_after(p):
        full = gm.graph.call_function(torch.index_select, (both, dim, p))
    y.replace_all_uses_with(full, delete_user_cb=lambda user: user not in (first, both))
    if keep.in_rows is not None:  # a depthwise convolution reads only the channels of its groups left
        gm.register_buffer(f"{name}_in", torch.as_tensor(keep.in_rows, dtype=torch.long))
        x = y.args[0]
        with gm.graph.inserting_before(y):
            idx = gm.graph.get_attr(f"{name}_in")
            sub = gm.graph.call_function(torch.index_select, (x, 1, idx))
        y.replace_input_with(x, sub)


def _spatial(layer: Layer) -> int:
    """How many dims follow the channel dim of a convolution's output."""
    mod = layer.module
    return len(mod.kernel_size) if hasattr(mod, "kernel_size") else 0


def carry_masks(gm: nn.Module, plan: Plan, masks: dict[tuple[str, str], torch.Tensor]) -> dict[str, torch.Tensor]:
    """Re-apply the prune-form masks to the kept weights; returns them by parameter name."""
    out = {}
    for (path, name), mask in masks.items():
        keep, layer = plan.keep.get(path), plan.channels.layers.get(path)
        if keep is not None and layer is not None:
            rows = keep.rows if keep.rows is not None and name == "weight" else keep.out
            if layer.kind == "embedding":
                mask = _take(mask, 1, keep.out)
            elif layer.kind == "cut" and name == "weight":
                assert keep.inp is not None
                mask = _take(_take(mask, 0, rows), 1, keep.inp)
            else:
                mask = _take(mask, 0, rows)
        try:
            mod = gm.get_submodule(path)
        except AttributeError:
            continue  # a module the traced graph never calls
        assert mask is not None
        prune.custom_from_mask(mod, name, mask)
        out[f"{path}.{name}" if path else name] = mask
    return out

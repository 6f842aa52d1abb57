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
from typing import Any

import numpy as np
import torch
from torch import fx, nn
from torch.nn.utils import parametrize, prune

from .edits import fill_in, stand_in
from .plan import Keep, Plan, clone

__all__ = ["bake", "build", "carry_masks"]


def bake(model: nn.Module, copy_first: bool = True) -> tuple[nn.Module, dict[tuple[str, str], torch.Tensor]]:
    """A copy of ``model`` (``model`` itself without ``copy_first``) whose pruned and parametrized weights
    are plain parameters (their current values), and the prune-form masks it had, by (module path,
    parameter name)."""
    plain = clone(model) if copy_first else model
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
    elif kind == "grouped":
        per = mod.out_channels // mod.groups
        out = keep.rows if keep.rows is not None else out
        _set(mod, "weight", _take(w, 0, out))
        _set(mod, "bias", _take(mod.bias, 0, out))
        mod.groups = len(out) // per
        mod.in_channels, mod.out_channels = mod.groups * w.shape[1], len(out)
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
            if len(keep.out) and (keep.rows is None or len(keep.rows)):
                _slice(plain.get_submodule(target), layers[target].kind, keep, plan.folds.get(target))
    gm = fx.GraphModule(plain, copy.deepcopy(plan.channels.graph))
    for target, keep in plan.keep.items():
        layer = layers[target]
        if len(keep.out) == 0 or (keep.rows is not None and len(keep.rows) == 0):
            stand_in(gm, layer, keep)
        elif keep.rows is not None:
            fill_in(gm, layer, keep)
    gm.graph.lint()
    gm.recompile()
    gm.eval()
    return gm


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

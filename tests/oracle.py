"""The path-count oracle of DESIGN.md, built from real torch ops at full resolution.

A float64 copy of the model where every weight is its 0/1 mask, biases are zero, BatchNorm and
activations are the identity, max pooling is (scaled) sum pooling and a gate ``x * sigmoid(s)`` becomes
``x * (1 + s)``. All-ones inputs go forward, ``sum(outputs)`` goes backward; each layer's output is
binarised forward (straight-through) and its gradient backward, so nothing overflows. A weight is
effective iff its gradient is positive and its mask is 1.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
             nn.ConvTranspose3d)
_IDENTITY_MODULES = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Dropout, nn.Dropout2d, nn.Identity,
                     nn.LeakyReLU, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.Tanh, nn.ELU)
_GATE_MODULES = (nn.Sigmoid, nn.Hardsigmoid)
_IDENTITY_FUNCS = {F.relu, torch.relu, F.relu6, F.hardswish, F.silu, F.gelu, F.dropout, torch.dropout,
                   F.hardtanh, F.batch_norm, torch.tanh, F.leaky_relu, F.elu}
_IDENTITY_NAMES = {"stochastic_depth"}
_GATE_FUNCS = {torch.sigmoid, F.sigmoid, F.hardsigmoid}
_IDENTITY_METHODS = {"relu", "relu_", "tanh"}
_GATE_METHODS = {"sigmoid", "sigmoid_"}


def _binarize(y: Any) -> Any:
    if isinstance(y, torch.Tensor) and y.is_floating_point() and y.requires_grad:
        b = (y > 0).to(y.dtype) + (y - y.detach())
        b.register_hook(lambda g: (g > 0).to(g.dtype))
        return b
    if isinstance(y, (tuple, list)):
        return type(y)(_binarize(v) for v in y)
    return y


class _PathCount(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, masks: dict[str, torch.Tensor]):
        super().__init__(gm)
        self.masks = masks
        self.leaves: dict[str, torch.Tensor] = {}

    def _weight(self, name: str) -> torch.Tensor:
        w = self.masks[name].to(torch.float64).clone().requires_grad_(True)
        self.leaves[name] = w
        return w

    def run_node(self, n: fx.Node) -> Any:
        return _binarize(super().run_node(n))

    def call_module(self, target: str, args, kwargs) -> Any:
        m = self.fetch_attr(target)
        x = args[0]
        if isinstance(m, _WEIGHTED):
            params = {"weight": self._weight(f"{target}.weight")}
            if m.bias is not None:
                params["bias"] = torch.zeros(m.bias.shape, dtype=torch.float64)
            return torch.func.functional_call(m, params, tuple(args), dict(kwargs))
        if isinstance(m, _IDENTITY_MODULES):
            return x
        if isinstance(m, _GATE_MODULES):
            return 1 + x
        if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
            return _sum_pool(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
        if isinstance(m, nn.AdaptiveMaxPool2d):
            return F.adaptive_avg_pool2d(x, m.output_size)
        return super().call_module(target, args, kwargs)

    def call_function(self, target, args, kwargs) -> Any:
        if target in _IDENTITY_FUNCS or getattr(target, "__name__", "") in _IDENTITY_NAMES:
            return args[0]
        if target in _GATE_FUNCS:
            return 1 + args[0]
        if target is F.max_pool2d:
            a = list(args) + [None] * 6
            k = a[1] if a[1] is not None else kwargs["kernel_size"]
            s = kwargs.get("stride", a[2]) or k
            return _sum_pool(args[0], k, s, kwargs.get("padding", a[3] or 0), kwargs.get("dilation", a[4] or 1),
                             kwargs.get("ceil_mode", a[5] or False))
        return super().call_function(target, args, kwargs)

    def call_method(self, target, args, kwargs) -> Any:
        if target in _IDENTITY_METHODS:
            return args[0]
        if target in _GATE_METHODS:
            return 1 + args[0]
        return super().call_method(target, args, kwargs)


def _sum_pool(x, k, s, p, d, ceil):
    d = d if isinstance(d, int) else max(d)
    assert d == 1, "dilated max pooling is not in the oracle"
    n = x.dim() - 2
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[n]
    return pool(x, k, s, p, ceil_mode=ceil, count_include_pad=True)


def oracle_masks(model: nn.Module, input_shapes: list[tuple], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Effective masks by path counting: one real forward/backward at full resolution in float64."""
    was = model.training
    model.eval()
    try:
        gm = fx.symbolic_trace(model)
    finally:
        model.train(was)
    gm.eval()
    interp = _PathCount(gm, masks)
    inputs = [torch.ones(s, dtype=torch.float64) for s in input_shapes]
    with torch.enable_grad():
        out = interp.run(*inputs)
        outs = [o for o in (out if isinstance(out, (tuple, list)) else [out]) if isinstance(o, torch.Tensor)]
        total = sum(o.sum() for o in outs)
        leaves = list(interp.leaves.values())
        grads = torch.autograd.grad(total, leaves, allow_unused=True) if total.requires_grad else [None] * len(leaves)
    res = {}
    for (name, w), g in zip(interp.leaves.items(), grads):
        m = masks[name]
        res[name] = (g > 0) & m if g is not None else torch.zeros_like(m)
    for name, m in masks.items():
        res.setdefault(name, torch.zeros_like(m))
    return res


def random_masks(model: nn.Module, sparsity: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """Independent Bernoulli masks keeping ``1 - sparsity`` of each prunable weight."""
    from connectome.io.masks import prunable_weights
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    out = {}
    for name in prunable_weights(model):
        w = params[name]
        out[name] = torch.rand(w.shape, generator=g) >= sparsity
    return out

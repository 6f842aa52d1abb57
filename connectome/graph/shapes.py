"""Shapes without arithmetic: run an fx graph on ``meta`` tensors, the common layers by formula.

Examples
--------
>>> import torch
>>> from torch import fx
>>> m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.AdaptiveAvgPool2d(1))
>>> g = fx.Tracer().trace(m)
>>> vals = MetaRun(m, g, {}).propagate((torch.zeros(1, 3, 9, 9),), [n for n in g.nodes if n.op == "placeholder"])
>>> [tuple(v.shape) for n, v in vals.items() if n.op == "call_module"]
[(1, 8, 5, 5), (1, 8, 1, 1)]
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx, nn

__all__ = ["MetaRun", "ShapeError", "to_meta", "data_dependent", "unbacked", "DATA_DEPENDENT"]


class ShapeError(RuntimeError):
    """Shape propagation failed at ``node``; the cause is chained."""

    def __init__(self, node: fx.Node):
        super().__init__(f"shape propagation failed at {node.name}")
        self.node = node


class MetaRun(fx.Interpreter):
    """Runs the graph on meta tensors: shapes and dtypes only, no arithmetic."""

    def __init__(self, model: nn.Module, graph: fx.Graph, constants: dict[str, torch.Tensor]):
        super().__init__(model, garbage_collect_values=False, graph=graph)
        self.constants = constants
        self.vals: dict[fx.Node, Any] = {}

    def propagate(self, inputs: tuple, placeholders: list[fx.Node]) -> dict[fx.Node, Any]:
        """Every node's meta value, ``placeholders`` fed ``inputs`` then their defaults (not fx's ``run``)."""
        args = [to_meta(x) for x in inputs]
        for p in placeholders[len(inputs) :]:
            default = p.args[0] if p.args else None
            args.append(to_meta(default))
        given = dict(zip(placeholders, args))
        env = self.vals
        # fx.Interpreter.run's per-node bookkeeping (tracebacks, current-node context) costs more than
        # the meta arithmetic; this loop does the same dispatch without it
        for n in self.graph.nodes:
            if n.op == "output":
                break
            try:
                if n.op == "placeholder":
                    out = given.get(n)
                else:
                    a = fx.node.map_arg(n.args, env.__getitem__)
                    k = fx.node.map_arg(n.kwargs, env.__getitem__)
                    out = getattr(self, n.op)(n.target, a, k)
                    if isinstance(out, torch.Tensor) and out.device.type != "meta":
                        out = to_meta(out)  # a tensor made in forward (torch.zeros(x.shape[0], n))
            except Exception as e:
                raise ShapeError(n) from e
            env[n] = out
        return env

    def get_attr(self, target, args, kwargs):
        if target in self.constants:
            return to_meta(self.constants[target])
        return to_meta(super().get_attr(target, args, kwargs))

    def call_function(self, target, args, kwargs):
        if (
            target in _BROADCASTING and not kwargs and len(args) == 2 and all(isinstance(a, torch.Tensor) for a in args)
        ):  # meta dispatch of add costs ~0.2 ms
            a, b = args
            shape = _broadcast(tuple(a.shape), tuple(b.shape))
            if shape is not None:
                return torch.empty(shape, dtype=torch.promote_types(a.dtype, b.dtype), device="meta")
        return super().call_function(target, args, kwargs)

    def call_module(self, target, args, kwargs):
        mod = self.submodules.get(target)
        mod = mod if mod is not None else self.fetch_attr(target)
        shape = _leaf_shape(mod, args, kwargs)
        if shape is not None:
            return torch.empty(shape, dtype=args[0].dtype, device="meta")
        # parameters and every buffer: a parametrization's mask buffer is not in the state_dict
        state = {k: to_meta(v) for k, v in (*mod.named_parameters(), *mod.named_buffers())}
        return torch.func.functional_call(mod, state, tuple(args), dict(kwargs))


_BROADCASTING = (operator.add, operator.sub, operator.mul, operator.iadd, torch.add, torch.sub)
_SAME_SHAPE = (
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.LeakyReLU,
    nn.ELU,
    nn.Mish,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
)


def _broadcast(a: tuple, b: tuple) -> tuple | None:
    """``torch.broadcast_shapes`` for plain int shapes (torch's goes through symbolic-shape checks, ~60 us);
    None where they do not broadcast, so that torch raises its own error.

    >>> _broadcast((8, 1, 5), (3, 1)), _broadcast((2, 3), (4, 3))
    ((8, 3, 5), None)
    """
    if a == b:
        return a
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    out = []
    for x, y in zip(a, b):
        if x != y and x != 1 and y != 1:
            return None
        out.append(y if x == 1 else x)
    return tuple(out)


def _leaf_shape(mod: Any, args, kwargs) -> tuple[int, ...] | None:
    """Output shape of the most common layers by formula (functional_call on meta costs ~0.3 ms each).

    ``mod`` is an ``nn.Module`` (typed Any: the attributes read are those of the exact types matched)."""
    if kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor):
        return None
    x = tuple(args[0].shape)
    if type(mod) in _SAME_SHAPE:
        return x
    if type(mod) is nn.Linear and x and x[-1] == mod.in_features:
        return x[:-1] + (mod.out_features,)
    if (
        type(mod) in (nn.Conv1d, nn.Conv2d, nn.Conv3d)
        and isinstance(mod.padding, tuple)
        and len(x) == mod.weight.dim()
        and x[1] == mod.in_channels
    ):
        k, s, p, d = mod.kernel_size, mod.stride, mod.padding, mod.dilation
        sp = tuple((n + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i, n in enumerate(x[2:]))
        return (x[0], mod.out_channels) + sp if all(v > 0 for v in sp) else None
    if isinstance(mod, _ADAPTIVE) and not getattr(mod, "return_indices", False):
        n = int(type(mod).__name__[-2])
        size = mod.output_size if isinstance(mod.output_size, (tuple, list)) else (mod.output_size,) * n
        if len(x) > n and len(size) == n:
            return x[:-n] + tuple(x[len(x) - n + i] if v is None else int(v) for i, v in enumerate(size))
    if type(mod) in _POOLS and not mod.ceil_mode and not getattr(mod, "return_indices", False):
        n = int(type(mod).__name__[-2])
        k, s, p = (_ntuple(getattr(mod, a), n) for a in ("kernel_size", "stride", "padding"))
        d = _ntuple(getattr(mod, "dilation", 1), n)
        if len(x) > n:
            sp = tuple((m + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i, m in enumerate(x[-n:]))
            return x[:-n] + sp if all(v > 0 for v in sp) else None
    return None


_ADAPTIVE = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)


def _ntuple(v: Any, n: int) -> tuple[int, ...]:
    return tuple(int(e) for e in v) if isinstance(v, (tuple, list)) else (int(v),) * n


def to_meta(x: Any) -> Any:
    """``x`` with every tensor replaced by an empty one of its shape and dtype on the ``meta`` device.

    >>> to_meta((torch.zeros(2, 3), 4))[0].device
    device(type='meta')
    """
    if isinstance(x, torch.Tensor):
        return torch.empty(x.shape, dtype=x.dtype, device="meta")
    if isinstance(x, (list, tuple)):
        return type(x)(to_meta(v) for v in x)
    return x


DATA_DEPENDENT = (
    "{where} makes a shape that depends on the input values (data-dependent routing, such as "
    "experts dispatched with nonzero or a boolean mask); connectome needs shapes fixed by the input "
    "shape: route with a dense mask (torch.where, or multiply by a one-hot gate) instead"
)
_DATA_DEPENDENT_OPS = frozenset(
    {
        "nonzero",
        "masked_select",
        "unique",
        "unique_consecutive",
        "argwhere",
        "nonzero_static",
        "_unique2",
        "unique_dim",
        "masked_scatter",
        "repeat_interleave",
    }
)


def data_dependent(n: fx.Node) -> bool:
    """Whether node ``n`` has an output shape that depends on values (nonzero, indexing by a mask)."""
    target = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "")
    if str(target).split(".")[0] in _DATA_DEPENDENT_OPS:
        return True
    if n.op == "call_function" and n.target is operator.getitem and len(n.args) > 1:
        idx = n.args[1] if isinstance(n.args[1], tuple) else (n.args[1],)
        return any(isinstance(i, fx.Node) and getattr(i.meta.get("val"), "dtype", None) == torch.bool for i in idx)
    return False


def unbacked(ep_graph: fx.Graph) -> fx.Node | None:
    """The first node of an exported graph whose output shape depends on values (an unbacked symbol)."""
    for n in ep_graph.nodes:
        v = n.meta.get("val")
        if isinstance(v, torch.Tensor) and not all(isinstance(d, int) for d in v.shape):
            return n
    return None

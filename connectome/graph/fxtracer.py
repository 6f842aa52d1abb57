"""torch.fx's tracer, faster on the arguments nearly every call has, and keeping in-place operators.

Examples
--------
>>> import torch
>>> g = FxTracer().trace(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(inplace=True)))
>>> [n.op for n in g.nodes]
['placeholder', 'call_module', 'call_module', 'output']
"""

from __future__ import annotations

import collections
import operator
from typing import Any

import torch
from torch import fx, nn

from .mutation import returns_input, writes_into_input

__all__ = ["FxTracer"]


_PLAIN_ARGS = frozenset(
    {int, float, bool, str, type(None), torch.dtype, torch.device, torch.memory_format, torch.layout}
)


class _ModuleStack(collections.OrderedDict):
    """fx snapshots its module stack into every node with ``copy.copy``, which for an OrderedDict goes
    through ``__reduce_ex__`` (~4 us a node); a plain copy gives the same OrderedDict."""

    def __copy__(self) -> collections.OrderedDict:
        return collections.OrderedDict(self)


class _FastScope(fx.proxy.Scope):
    """fx copies the current scope at every module call, by ``copy.copy`` (~4 us) too."""

    def __copy__(self) -> fx.proxy.Scope:
        return fx.proxy.Scope(self.module_path, self.module_type)


class _WritingProxy(fx.Proxy):
    """fx's proxy records ``h += y`` as ``h = h + y``, so a view of ``h`` taken before would not see the
    write; this one records the in-place operator, as eager PyTorch runs it."""


for _name, _op in (
    ("__iadd__", operator.iadd),
    ("__isub__", operator.isub),
    ("__imul__", operator.imul),
    ("__itruediv__", operator.itruediv),
    ("__ifloordiv__", operator.ifloordiv),
    ("__imod__", operator.imod),
    ("__ipow__", operator.ipow),
    ("__iand__", operator.iand),
    ("__ior__", operator.ior),
    ("__ixor__", operator.ixor),
):
    setattr(
        _WritingProxy,
        _name,
        lambda self, other, _op=_op: self.tracer.create_proxy("call_function", _op, (self, other), {}),
    )


class FxTracer(fx.Tracer):
    """fx's tracer with a short path for the arguments nearly every call has (proxies, plain constants,
    and tuples, lists or keyword dicts of them: fx checks each against parameters, buffers and modules
    first), and cheaper snapshots of the module stack and scope, which fx copies at every node."""

    def __init__(self) -> None:
        super().__init__()
        self.inplace_modules: set[str] = set()  # leaf modules that write into their input
        self.alias_modules: set[str] = set()  # leaf modules that return their input itself (nn.Identity)
        if isinstance(getattr(self, "module_stack", None), collections.OrderedDict):
            self.module_stack = _ModuleStack(self.module_stack)
        if type(getattr(self, "scope", None)) is fx.proxy.Scope:
            self.scope = _FastScope(self.scope.module_path, self.scope.module_type)

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        if getattr(m, "inplace", False) is True and writes_into_input(m):
            self.inplace_modules.add(self.path_of_module(m))
        elif returns_input(m):
            self.alias_modules.add(self.path_of_module(m))
        return super().call_module(m, forward, args, kwargs)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _WritingProxy(node, self)

    def create_arg(self, a: Any) -> Any:
        t = type(a)
        if t is _WritingProxy or t is fx.Proxy:
            return a.node
        if t in _PLAIN_ARGS:
            return a
        if t is tuple:
            return tuple(self.create_arg(x) for x in a)
        if t is list:
            return [self.create_arg(x) for x in a]
        if t is dict and all(type(k) is str for k in a):  # every call's kwargs
            return {k: self.create_arg(v) for k, v in a.items()}
        return super().create_arg(a)

"""In-place writes made visible: after ``h.add_(y)`` or ``h[:, :3].mul_(c)``, later reads of ``h`` see the write.

torch.fx records an in-place op as a node whose result may go unused, while later code keeps reading
the tensor it wrote into (or a tensor that one of its views aliases). This pass rewrites an fx graph
so that every read after a write reads the written value:

- a write into a tensor that is no view: later reads of the tensor read the write's node;
- a write into a view (a slice, ``narrow``, ``transpose``...): a :func:`write_back` node puts the written
  view back into its base, later reads of the base read that node, and views of the base taken
  before the write and read after it are taken again from it.

``write_back`` keeps the base's old value *and* the written one at the written positions (a union): a
view op that turns out to copy (``reshape`` of a non-contiguous tensor) then costs tightness, never
soundness. torch.export graphs are functionalized by torch itself (``run_decompositions``).

Examples
--------
>>> import torch
>>> from torch import fx
>>> class M(torch.nn.Module):
...     def forward(self, x):
...         h = x * 2
...         h[:, :1].add_(x[:, 1:])
...         return h
>>> g = fx.Tracer().trace(M())
>>> [n.name for n in functionalize(g)]
['mul']
>>> [n.name for n in g.nodes if n.op == "output"][0], next(n for n in g.nodes if n.op == "output").args[0].name
('output', 'write_back')
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Collection
from typing import Any

import torch
from torch import fx

__all__ = ["functionalize", "write_back", "is_view"]

_VIEW_METHODS = frozenset(
    {
        "view",
        "view_as",
        "reshape",
        "reshape_as",
        "transpose",
        "permute",
        "t",
        "narrow",
        "select",
        "unsqueeze",
        "squeeze",
        "flatten",
        "unflatten",
        "expand",
        "expand_as",
        "diagonal",
        "unfold",
        "movedim",
        "moveaxis",
        "swapaxes",
        "swapdims",
        "split",
        "chunk",
        "unbind",
        "tensor_split",
        "as_strided",
        "detach",
        "__getitem__",
        # may return the tensor itself: a write into the result may write into it
        "contiguous",
        "float",
        "double",
        "half",
        "bfloat16",
        "to",
        "type",
        "type_as",
        "cpu",
        "cuda",
        "view_as_real",
        "view_as_complex",
        "real",
        "imag",
    }
)
_VIEW_FUNCS = {
    torch.transpose,
    torch.narrow,
    torch.select,
    torch.squeeze,
    torch.unsqueeze,
    torch.flatten,
    torch.reshape,
    torch.permute,
    torch.t,
    torch.movedim,
    torch.moveaxis,
    torch.swapaxes,
    torch.swapdims,
    torch.split,
    torch.chunk,
    torch.unbind,
    torch.tensor_split,
    torch.diagonal,
    torch.unflatten,
    torch.as_strided,
    torch.detach,
}
_INPLACE_OPERATORS = {
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    operator.ifloordiv,
    operator.imod,
    operator.ipow,
    operator.iand,
    operator.ior,
    operator.ixor,
}
_NOT_WRITES = frozenset(
    {
        "requires_grad_",
        "share_memory_",
        "squeeze_",
        "unsqueeze_",
        "t_",
        "transpose_",
        "resize_",
        "as_strided_",
        "set_",
        # keep zero at zero and each element where it is: liveness is unchanged
        "relu_",
        "relu6_",
        "leaky_relu_",
        "elu_",
        "celu_",
        "selu_",
        "silu_",
        "hardswish_",
        "mish_",
        "tanh_",
    }
)
# in-place modules that keep zero at zero (ResNets' ReLU(inplace=True)): nothing to redirect
_SAME_LIVENESS_MODULES = (
    torch.nn.ReLU,
    torch.nn.ReLU6,
    torch.nn.LeakyReLU,
    torch.nn.ELU,
    torch.nn.CELU,
    torch.nn.SELU,
    torch.nn.SiLU,
    torch.nn.Hardswish,
    torch.nn.Mish,
    torch.nn.Dropout,
    torch.nn.Dropout1d,
    torch.nn.Dropout2d,
    torch.nn.Dropout3d,
    torch.nn.AlphaDropout,
)
_SAME_LIVENESS_FUNCS = {
    "relu",
    "relu6",
    "leaky_relu",
    "elu",
    "celu",
    "selu",
    "silu",
    "hardswish",
    "mish",
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "alpha_dropout",
}
# modules that return their input itself (in eval mode): a write into the result writes into the input
_ALIAS_MODULES = (
    torch.nn.Identity,
    torch.nn.Dropout,
    torch.nn.Dropout1d,
    torch.nn.Dropout2d,
    torch.nn.Dropout3d,
    torch.nn.AlphaDropout,
    torch.nn.FeatureAlphaDropout,
)


def write_back(base: torch.Tensor, value: torch.Tensor, chain: tuple) -> torch.Tensor:
    """``base`` with ``value`` written into the view that ``chain`` takes of it (a copy; ``base`` is kept).

    >>> write_back(torch.zeros(2, 3), torch.ones(2, 1), (("call_method", "narrow", (1, 0, 1), {}),)).tolist()
    [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    """
    out = base.clone()
    view_of(out, chain).copy_(value)
    return out


def view_of(t: Any, chain: tuple) -> Any:
    """Apply a chain of view ops (``(op, name, args, kwargs)`` each, ``t`` in front of args) to ``t``.

    Functions are named (``"operator.getitem"``, ``"torch.narrow"``), so that the graph prints as code.
    """
    for op, name, args, kwargs in chain:
        if op == "call_method":
            t = getattr(t, name)(*args, **kwargs)
        else:
            module, _, fn = name.rpartition(".")
            t = getattr({"operator": operator, "torch": torch, "builtins": builtins}[module], fn)(t, *args, **kwargs)
    return t


def is_view(n: Any) -> bool:
    """Whether node ``n`` returns a view of its first argument (basic indexing included)."""
    if not isinstance(n, fx.Node) or not n.args or not isinstance(n.args[0], fx.Node):
        return False
    if n.op == "call_method":
        return str(n.target) in _VIEW_METHODS
    if n.op == "call_function":
        if n.target is operator.getitem:
            return _basic_index(n.args[1])
        return n.target in _VIEW_FUNCS or (n.target is getattr and n.args[1] in ("T", "mT", "H", "mH", "data"))
    return False


def _basic_index(idx: Any) -> bool:
    """Whether indexing may give a view. Ints, slices, None and Ellipsis do (an element of a ``split``'s
    tuple too); a node (a size read off the input, or an index tensor, whose result is a copy) is taken as
    one as well: taking a copy for a view costs tightness (the write-back is a union), never soundness."""
    return True


def writes_into_input(m: torch.nn.Module) -> bool:
    """Whether an ``inplace=True`` module's write can change liveness (an in-place ReLU cannot)."""
    return not isinstance(m, _SAME_LIVENESS_MODULES)


def returns_input(m: torch.nn.Module) -> bool:
    """Whether a module returns its input tensor itself (``nn.Identity``, dropout in eval mode)."""
    return isinstance(m, _ALIAS_MODULES)


def _writes(n: fx.Node, inplace_modules: Collection[str]) -> bool:
    """Whether ``n`` writes into its first argument."""
    if not n.args or not isinstance(n.args[0], fx.Node):
        return False
    if n.op == "call_method":
        name = str(n.target)
        return name.endswith("_") and not name.startswith("_") and name not in _NOT_WRITES
    if n.op == "call_function":
        name = getattr(n.target, "__name__", "")
        if n.target in _INPLACE_OPERATORS or (
            name.endswith("_")
            and not name.startswith("_")
            and name not in _NOT_WRITES
            and n.target is not operator.setitem
        ):
            return True  # h += y, torch.index_put_(h, ...), torch.sigmoid_(h)
        return n.kwargs.get("inplace") is True and name not in _SAME_LIVENESS_FUNCS
    return n.op == "call_module" and str(n.target) in inplace_modules


def functionalize(
    graph: fx.Graph, inplace_modules: Collection[str] = frozenset(), alias_modules: Collection[str] = frozenset()
) -> list[fx.Node]:
    """Rewrite ``graph`` so that reads after an in-place write see it; returns the tensors written into.

    ``inplace_modules`` are the targets of ``call_module`` nodes that write into their input,
    ``alias_modules`` those that return their input itself.
    """
    written: list[fx.Node] = []
    latest: dict[fx.Node, fx.Node] = {}  # a written tensor -> the node that holds its value now
    for n in list(graph.nodes):
        if not _writes(n, inplace_modules):
            continue
        chain: list[fx.Node] = []
        base = n.args[0]
        while isinstance(base, fx.Node) and base.args and isinstance(base.args[0], fx.Node):
            if is_view(base):
                chain.insert(0, base)
            elif not (
                _writes(base, inplace_modules) or (base.op == "call_module" and str(base.target) in alias_modules)
            ):
                break  # a write and an identity return their input itself
            base = base.args[0]
        written.append(base)
        base = latest.get(base, base)  # an earlier write into the same tensor
        if chain:
            with graph.inserting_after(n):
                new = graph.call_function(write_back, (base, n, tuple(_spec(v) for v in chain)))
        else:
            new = n
        _redirect(graph, base, new, n)
        if base.op == "get_attr":  # fx reads a buffer anew at each access: all of them see the write
            for other in list(graph.nodes):
                if other.op == "get_attr" and other.target == base.target and other is not base:
                    _redirect(graph, other, new, n)
        for k, v in list(latest.items()):
            if v is base:
                latest[k] = new
        latest[base] = new
    return written


def _spec(v: fx.Node) -> tuple:
    if v.op == "call_method":
        name = str(v.target)
    elif v.target is getattr:
        name = "builtins.getattr"
    elif v.target is operator.getitem:
        name = "operator.getitem"
    else:
        fn: Any = v.target  # a call_function node's target: the function
        name = "torch." + fn.__name__
    return (v.op, name, tuple(v.args[1:]), dict(v.kwargs))


def _redirect(graph: fx.Graph, base: fx.Node, new: fx.Node, write: fx.Node) -> None:
    """Reads of ``base`` after ``write`` read ``new``; views of ``base`` taken before and read after are retaken."""
    order = {x: i for i, x in enumerate(graph.nodes)}
    after = order[new]
    for u in list(base.users):
        if u is new or u is write:
            continue
        if order[u] > after:
            u.replace_input_with(base, new)
        elif is_view(u) and u.args[0] is base:
            _retake(graph, u, new, after, order)


def _retake(graph: fx.Graph, view: fx.Node, src: fx.Node, after: int, order: dict) -> None:
    """``view`` was taken before position ``after``: its readers after it read the view taken again of ``src``."""
    with graph.inserting_after(src):
        again = graph.create_node(view.op, view.target, (src,) + tuple(view.args[1:]), dict(view.kwargs))
    for r in list(view.users):
        if r is again:
            continue
        if order.get(r, -1) > after:
            r.replace_input_with(view, again)
        elif is_view(r) and r.args[0] is view:
            _retake(graph, r, again, after, order)
    if not again.users:
        graph.erase_node(again)

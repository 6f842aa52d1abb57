"""The lowering registry: one small rule per op family turns an fx node into an :class:`Op`.

A rule is registered for the things an fx node can call: a module class (``nn.Conv2d``), a function
(``torch.add``, ``operator.add``), a tensor method name (``".view"``) or an ATen op
(``torch.ops.aten.conv2d``). Registering one key twice is an error, as in torch's flop counter.

An :class:`Op` says how liveness flows through the node: ``forward`` from its tensor inputs' alive-from-input
status to its output's, ``backward`` from its output's alive-to-output status to its inputs'. Ops that own
prunable weights list them in ``weights`` and compute their effective masks in ``effective``.

Examples
--------
>>> import torch
>>> find_rule_key(torch.nn.Linear(2, 2)) is torch.nn.Linear
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import fx, nn

from ...registry import register
from ..status import Status
from ..trace import Traced
from .computed import computed_weight
from .weight import Weight

if TYPE_CHECKING:  # connectome.io.masks imports this package: typing only, no cycle
    from ...io.masks import MaskSource

__all__ = [
    "Op",
    "Weight",
    "Ctx",
    "rule",
    "RULES",
    "find_rule",
    "find_rule_key",
    "key_name",
    "LowerError",
    "transposed_weight",
]

Value = Status | tuple | None
RuleFn = Callable[["Ctx"], "Op"]
RULES: dict[Any, RuleFn] = {}


class LowerError(ValueError):
    """A node could not be lowered; the message names the node."""


def rule(*keys: Any) -> Callable[[RuleFn], RuleFn]:
    """Register a lowering rule for module classes, functions, ``".method"`` names or ATen ops.

    A function of an optional package (torchvision, timm) is named by its qualified name, e.g.
    ``"torchvision.ops.stochastic_depth.stochastic_depth"``, so that the package need not be imported; a
    custom op it registers by ``"namespace::name"`` (``"transformers::grouped_mm_fallback"``).
    """

    def deco(fn: RuleFn) -> RuleFn:
        for k in dict.fromkeys(_packet(k) for k in keys):  # aliases (F.relu_ is torch.relu_) count once
            register(RULES, k, fn, "lowering rule for", shown=key_name(k))
        return fn

    return deco


def _packet(k: Any) -> Any:
    return getattr(k, "overloadpacket", k) if isinstance(k, torch._ops.OpOverload) else k


def find_rule_key(target: Any) -> Any:
    """The registry key that matches a module instance, function, method name or ATen op, or None."""
    if isinstance(target, nn.Module):
        for cls in type(target).__mro__:
            if cls in RULES:
                return cls
        return None
    k = _packet(target)
    try:
        if k in RULES:
            return k
    except TypeError:  # unhashable target
        return None
    # functions of optional packages are registered by qualified name, so they need not be imported
    name = f"{getattr(k, '__module__', '')}.{getattr(k, '__qualname__', '')}"
    if name not in RULES and isinstance(k, torch._ops.OpOverloadPacket):  # a custom op: "namespace::name"
        name = getattr(k, "_qualified_op_name", "")
    return name if name in RULES else None


def find_rule(traced: Traced, node: fx.Node) -> tuple[Any, RuleFn | None]:
    if node.op == "call_module":
        target: Any = traced.module(node)
    elif node.op == "call_method":
        target = "." + str(node.target)
    else:
        target = node.target
    key = find_rule_key(target)
    return key, (RULES[key] if key is not None else None)


def key_name(k: Any) -> str:
    """A readable name for a registry key or node target."""
    if isinstance(k, str):
        return k.lstrip(".") if k.startswith(".") else k
    if isinstance(k, type):
        return k.__name__
    if isinstance(k, nn.Module):
        return type(k).__name__
    if isinstance(k, (torch._ops.OpOverloadPacket, torch._ops.OpOverload)):
        return str(k)
    mod = getattr(k, "__module__", "") or ""
    name = getattr(k, "__name__", str(k))
    short = {"torch.nn.functional": "F", "_operator": "operator", "builtins": ""}.get(mod, mod)
    return f"{short}.{name}" if short else name


class Op:
    """How liveness flows through one node. Subclasses override ``forward`` and ``backward``."""

    weights: Sequence[Weight] = ()
    supported: bool = True
    multi: bool = False  # reads every tensor argument (else only the first, or ``data``)
    couples: bool = False  # multiplies or normalises its inputs together (a constant there matters)
    data: list | None = None  # the argument nodes it reads, when not the default

    # statuses are Any here: an op reads and makes a Status, a tuple of them (split, a recurrent layer's
    # states) or None (nothing alive), and each subclass knows which of them it takes
    def forward(self, ins: list[Any]) -> Any:
        raise NotImplementedError

    def backward(self, ins: list[Any], out: Any, grad: Any) -> list[Any]:
        """Alive-to-output status of each tensor input, given the output's (``grad``)."""
        raise NotImplementedError

    def effective(self, ins: list[Any], grad: Any) -> dict[str, torch.Tensor]:
        """Effective mask of each owned weight, given input (forward) and output (backward) status."""
        return {}

    def unreached(self, grad: Any) -> dict[str, torch.Tensor] | None:
        """What :meth:`effective` returns when there is nothing to compute: ``{}`` for an op without
        weights, all-zero masks when no output is alive to the outputs; else None."""
        if not self.weights:
            return {}
        if grad is None:
            return {w.name: torch.zeros_like(w.mask) for w in self.weights}
        return None


@dataclass
class Ctx:
    """What a rule sees: the node, the traced model, shapes, and the masks of prunable weights."""

    node: fx.Node
    traced: Traced
    masks: MaskSource
    tensor_args: list[fx.Node] = field(default_factory=list)
    hints: list[int] = field(default_factory=list)  # preferred channel dim of each tensor input

    @property
    def module(self) -> nn.Module:
        return self.traced.module(self.node)

    def val(self, arg: Any) -> Any:
        """The meta value of a node argument (constants pass through)."""
        return self.traced.vals.get(arg) if isinstance(arg, fx.Node) else arg

    def shape(self, arg: Any) -> tuple[int, ...]:
        v = self.val(arg)
        return tuple(v.shape)

    @property
    def out(self) -> Any:
        return self.traced.vals.get(self.node)

    def arg(self, i: int, name: str, default: Any = None) -> Any:
        """Positional-or-keyword argument ``i``/``name`` of the node (ATen ops: by schema name)."""
        target = self.node.target
        if isinstance(target, torch._ops.OpOverload):
            names = [a.name for a in target._schema.arguments]
            if name in names:
                i = names.index(name)
        if len(self.node.args) > i:
            return self.node.args[i]
        return self.node.kwargs.get(name, default)

    def constant(self, arg: Any) -> Any:
        """The real value of an argument that does not depend on the model inputs (evaluated once)."""
        return self.traced.constant(arg)

    def concrete(self, a: Any) -> Any:
        """An argument with nodes replaced by their (non-tensor) values, recursively."""
        return fx.node.map_aggregate(a, lambda x: self.val(x) if isinstance(x, fx.Node) else x)

    def input_index(self, arg: Any) -> int:
        """Position of a node argument among the op's tensor inputs."""
        return self.tensor_args.index(arg)

    def weight(self, arg: Any, kind: str) -> Weight | None:
        """Resolve the node feeding a weight operand to the prunable parameters behind it and its mask.

        A parameter, or ``torch.nn.utils.prune``'s ``weight_orig * weight_mask`` when export traced it,
        is that weight; a tensor computed from parameters alone (``W.t()``, ``s * W``, a parametrization
        that export inlined) is traced back to them (:mod:`connectome.graph.lower.computed`). Returns None
        when the operand depends on the model inputs (then it is an activation, not a weight).
        """
        name = self.traced.attr_name(arg)
        if (
            name is None
            and isinstance(arg, fx.Node)
            and arg.op == "call_function"
            and getattr(arg.target, "__name__", "") in ("mul", "mul.Tensor")
            and len(arg.args) == 2
        ):
            names = [self.traced.attr_name(a) for a in arg.args]
            if all(names) and any(n is not None and n.endswith("_orig") for n in names):
                name = next(n for n in names if n is not None and n.endswith("_orig"))
        if name is None:
            return computed_weight(self, arg, kind)
        if not self.masks.names.is_param(name):
            return None  # a buffer or a constant (a DCT matrix): an operand, not a prunable weight
        return self.named_weight(name, kind)

    def named_weight(self, name: str, kind: str) -> Weight:
        name = self.masks.names.key(name)
        mask = self.masks.get(name)
        if mask is None:
            raise LowerError(f"no mask for weight {name!r} at node {self.node.name}")
        return Weight(name, kind, mask, reduced=self.masks.reduced(name))


def tensor_args(traced: Traced, node: fx.Node) -> list[fx.Node]:
    """The node's arguments that carry tensors, in argument order, without repeats."""
    found: list[fx.Node] = []

    def visit(a: fx.Node) -> fx.Node:
        v = traced.vals.get(a)
        if a not in found and (isinstance(v, torch.Tensor) or _has_tensor(v)):
            found.append(a)
        return a

    fx.node.map_arg((node.args, node.kwargs), visit)
    return found


def _has_tensor(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and any(isinstance(x, torch.Tensor) or _has_tensor(x) for x in v)


_TRANSPOSES = {"t", "permute", "transpose", "numpy_T"}


def transposed_weight(ctx: Ctx, arg: Any) -> Weight | None:
    """``W.t()`` (or ``permute(W, [1, 0])``) of a parameter: its Weight, else None."""
    if isinstance(arg, torch.fx.Node) and arg.op == "call_function":
        name = getattr(getattr(arg.target, "overloadpacket", arg.target), "__name__", "")
        if name in _TRANSPOSES and arg.args:
            return ctx.weight(arg.args[0], "linear")
    return None

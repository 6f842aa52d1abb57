"""Trace a model into an fx graph and record every node's shape without running real arithmetic.

``torch.fx.symbolic_trace`` comes first: it keeps ``torch.nn`` layers as single nodes, so a rule sees a
whole ``nn.Conv2d`` with its module. When it fails (data-dependent control flow, unsupported Python),
``torch.export`` takes over; its graph is also fx, at ATen level, with parameters as placeholders.
Shapes come from running the graph on the ``meta`` device: each op computes only its output shape.

Examples
--------
>>> import torch
>>> t = trace(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()), input_shape=(2, 4))
>>> t.tracer, [tuple(t.vals[n].shape) for n in t.outputs]
('fx', [(2, 3)])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import prod
from typing import Any

import torch
from torch import fx, nn

from .. import memory
from .exporttrace import export_program, split_signature
from .fxtracer import FxTracer
from .mutation import functionalize
from .shapes import DATA_DEPENDENT, MetaRun, ShapeError, data_dependent, to_meta, unbacked
from .values import holds_tensor, random_values, reads_values, shape_only, writes_in_place, zeros_of

__all__ = ["Traced", "TraceError", "trace", "as_inputs"]

InputShape = Sequence[int] | Sequence[Sequence[int]]  # one input's shape, or one shape per input


class TraceError(ValueError):
    """The model could not be traced; the message names what broke it."""


@dataclass
class Traced:
    """A traced model: its fx graph, each node's meta-device value, and where parameters live."""

    model: nn.Module
    graph: fx.Graph
    tracer: str  # "fx" or "export"
    inputs: list[fx.Node]  # placeholders that are model inputs
    outputs: list[fx.Node]  # tensor nodes the model returns
    vals: dict[fx.Node, Any]  # meta tensors (or tuples, ints) per node
    root: nn.Module  # owner of get_attr / call_module targets
    param_nodes: dict[fx.Node, str] = field(default_factory=dict)  # export placeholder -> FQN
    constants: dict[str, torch.Tensor] = field(default_factory=dict)  # export's lifted tensor constants
    _folded: dict[fx.Node, Any] = field(default_factory=dict, repr=False)
    opaque_weights: set[str] = field(default_factory=set)  # parameters used through computed weights
    _modules: dict[str, nn.Module] = field(default_factory=dict, repr=False)
    _dep: dict[fx.Node, bool] | None = field(default=None, repr=False)

    def depends_on_input(self) -> dict[fx.Node, bool]:
        """Per node: whether its value can depend on a model input (else it is a constant). Computed once:
        the graph does not change after tracing."""
        if self._dep is not None:
            return self._dep
        dep: dict[fx.Node, bool] = {}
        inputs = set(self.inputs)
        for n in self.graph.nodes:
            found = any(dep.get(a, False) for a in n.all_input_nodes)  # the nodes in its args and kwargs
            # a shape read off an input (x.shape[0], x.size(1)), or a tensor made from one (zeros_like), is
            # fixed by the traced input shape
            dep[n] = (
                n in inputs
                or random_values(n)
                or (found and (holds_tensor(self.vals.get(n)) or reads_values(n)) and not shape_only(n))
            )
        self._dep = dep
        return dep

    def constant(self, arg: Any, overrides: dict[fx.Node, Any] | None = None, grad: bool = False) -> Any:
        """Evaluate, with real tensors, a node that does not depend on the model inputs.

        ``overrides`` replaces the values of some nodes (and memoises this evaluation's values, instead of
        the shared cache: pass a fresh dict); with ``grad`` autograd
        records the computation (for leaves in ``overrides`` that require it).
        """
        if not isinstance(arg, fx.Node):
            return arg
        if overrides is not None:
            if arg in overrides:
                return overrides[arg]
        elif arg in self._folded:
            return self._folded[arg]
        if arg in self.inputs:
            raise ValueError(f"{arg.name} is a model input, not a constant")
        if arg in self.vals and not holds_tensor(self.vals[arg]):
            return self.vals[arg]  # a shape or a number: known from shape propagation
        target: Any = arg.target  # a function (call_function) or a method's name (call_method)
        if arg.op == "get_attr" or arg in self.param_nodes:
            name = self.attr_name(arg)
            value = self.attr(name) if name is not None else None
            if value is None:
                raise ValueError(f"no value for {arg.name}")
        elif arg.op in ("call_function", "call_method") and shape_only(arg):  # zeros_like(x): x's shape only
            args = fx.node.map_arg(arg.args, lambda a: zeros_of(self.vals.get(a)))
            kwargs = fx.node.map_arg(arg.kwargs, lambda a: zeros_of(self.vals.get(a)))
            value = (
                target(*args, **kwargs) if arg.op == "call_function" else getattr(args[0], target)(*args[1:], **kwargs)
            )
        elif arg.op in ("call_function", "call_method"):
            args = fx.node.map_arg(arg.args, lambda a: self.constant(a, overrides, grad))
            kwargs = fx.node.map_arg(arg.kwargs, lambda a: self.constant(a, overrides, grad))
            if writes_in_place(arg) and args and isinstance(args[0], torch.Tensor):
                args = (args[0].clone(),) + tuple(args[1:])  # never write into the model's own tensors
            with torch.enable_grad() if grad else torch.no_grad():
                value = (
                    target(*args, **kwargs)
                    if arg.op == "call_function"
                    else getattr(args[0], target)(*args[1:], **kwargs)
                )
        else:
            raise ValueError(f"{arg.name} ({arg.op}) cannot be evaluated ahead of time")
        if overrides is None:
            self._folded[arg] = value
        else:  # the caller's table memoises this evaluation
            overrides[arg] = value
        return value

    def param_ancestors(self, arg: fx.Node) -> list[fx.Node]:
        """The parameter/buffer nodes a constant node is computed from."""
        found, todo, seen = [], [arg], set()
        while todo:
            n = todo.pop()
            if n in seen or not isinstance(n, fx.Node):
                continue
            seen.add(n)
            if n.op == "get_attr" or n in self.param_nodes:
                found.append(n)
            todo.extend(n.all_input_nodes)
        return found

    def module(self, node: fx.Node) -> nn.Module:
        """The module a ``call_module`` node calls."""
        target = str(node.target)  # a call_module node's target is the module's qualified name
        mod = self._modules.get(target)
        if mod is None:
            mod = self._modules[target] = self.root.get_submodule(target)
        return mod

    def attr_name(self, node: Any) -> str | None:
        """Fully qualified name of a parameter/buffer node, or None if the node is computed."""
        if not isinstance(node, fx.Node):
            return None
        if node.op == "get_attr":
            return str(node.target)
        return self.param_nodes.get(node)

    def attr(self, name: str) -> torch.Tensor | None:
        """The real tensor (parameter, buffer or attribute) at a qualified name of the model."""
        if name in self.constants:
            return self.constants[name]
        mod_name, _, leaf = name.rpartition(".")
        for root in (self.model, self.root):
            try:
                value = getattr(root.get_submodule(mod_name), leaf)
            except AttributeError:
                continue
            if isinstance(value, torch.Tensor):
                return value
        return None


# values fixed by a shape alone (random and uninitialised ones are not: they are never constants to fold)
def _refuse_value_reads(traced: Traced) -> Traced:
    """A number read off the input's values (``x.max().item()``) leaves the tensors the walk follows: refuse
    it in one line rather than lose the signal it carries."""
    if not traced.outputs:  # nothing to reach: every weight would be called ineffective
        raise TraceError(
            f"{type(traced.model).__name__}.forward returns no tensor (None, or only numbers and strings): "
            "return the model's outputs"
        )
    dep = traced.depends_on_input()
    for n in traced.graph.nodes:
        if dep.get(n) and reads_values(n):
            raise TraceError(
                f"{_where(n)} reads a number off the input's values (.item(), .tolist(), int(t)), "
                "which connectome cannot follow: keep it a tensor (x.amax() instead of "
                "x.max().item())"
            )
    return traced


def as_inputs(
    example_inputs: Any = None,
    input_shape: InputShape | None = None,
    input_dtype: torch.dtype | None = None,
    device: str | None = None,
) -> tuple:
    """Normalise example inputs: a tensor, a tuple of tensors, or shapes (float32 unless ``input_dtype``).

    Token models take integer ids: ``input_dtype=torch.long``.

    >>> [(tuple(x.shape), x.dtype) for x in as_inputs(input_shape=(1, 8), input_dtype=torch.long)]
    [((1, 8), torch.int64)]
    """
    if example_inputs is None:
        if input_shape is None:
            raise TraceError("no example input: pass example_inputs or input_shape (e.g. 1,3,32,32)")
        one = not (input_shape and isinstance(input_shape[0], (list, tuple)))
        shapes: Sequence[Any] = [input_shape] if one else input_shape
        dtype = input_dtype or torch.float32
        if device != "meta":
            numel = sum(prod(int(d) for d in s) for s in shapes)
            memory.reserve(numel * torch.empty((), dtype=dtype).element_size(), "the example inputs")
        return tuple(torch.zeros(tuple(int(d) for d in s), dtype=dtype, device=device) for s in shapes)
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def trace(
    model: nn.Module,
    example_inputs: Any = None,
    input_shape: InputShape | None = None,
    tracer: str = "auto",
    input_dtype: torch.dtype | None = None,
) -> Traced:
    """Trace ``model`` with shapes; ``tracer`` is ``"auto"``, ``"fx"``, ``"export"`` or ``"export-core"``.

    ``"export-core"`` decomposes the exported graph to core ATen (``convolution``, ``addmm``...), the
    form other compilers hand around.
    """
    if not isinstance(model, nn.Module):
        raise TraceError(f"expected a torch.nn.Module, got {type(model).__name__}")
    # fx needs shapes only: zeros from a shape are made on the meta device, and for real only if export runs
    inputs = as_inputs(example_inputs, input_shape, input_dtype, device="meta")
    # eval mode for tracing; restore exactly the modules that were training (mixed modes included)
    training = [m for m in model.modules() if m.training]
    for m in training:
        m.training = False
    fx_error: Exception | None = None
    try:
        if tracer in ("auto", "fx"):
            try:
                return _refuse_value_reads(_trace_fx(model, inputs))
            except Exception as e:  # symbolic tracing fails in many ways; export gets a chance
                if tracer == "fx":
                    if isinstance(e, TraceError):
                        raise
                    raise TraceError(f"torch.fx could not trace {type(model).__name__}: {_short(e)}") from e
                fx_error = e
        if tracer not in ("auto", "fx", "export", "export-core"):
            raise TraceError(f"unknown tracer {tracer!r}: use auto, fx, export or export-core")
        try:
            inputs = as_inputs(example_inputs, input_shape, input_dtype)
            return _refuse_value_reads(_trace_export(model, inputs, core=tracer == "export-core"))
        except TraceError:
            raise
        except Exception as e:
            why = f"torch.export failed: {_short(e)}"
            if tracer == "auto" and fx_error is not None:
                why = f"torch.fx failed ({_short(fx_error)}) and {why}"
            raise TraceError(f"cannot trace {type(model).__name__}: {why}") from e
    finally:
        for m in training:
            m.training = True


def _trace_fx(model: nn.Module, inputs: tuple) -> Traced:
    before = set(vars(model))
    # fx runs code on buffers for real while it traces (g = self.scale; g.mul_(0.5)): never change the model
    buffers = [(name, b, b._version, b.detach().clone()) for name, b in model.named_buffers()]
    written = []
    try:
        tracer = FxTracer()
        graph = tracer.trace(model)  # no GraphModule: its code generation costs a third of the trace
    finally:
        constants = _restore(model, before)
        with torch.no_grad():
            for name, b, version, saved in buffers:
                if b._version != version:  # written in place while tracing
                    b.copy_(saved)
                    written.append(name)
    if written:  # fx ran the write for real: later reads of the buffer are constants it cannot relate to it
        raise TraceError(
            f"{type(model).__name__}.forward writes into its buffer {written[0]} in place, which "
            "torch.fx runs instead of tracing: use --tracer export (auto does)"
        )
    # reads after an in-place write read what it wrote
    for base in functionalize(graph, tracer.inplace_modules, tracer.alias_modules):
        if base.op == "get_attr" and _read_for_real(model, str(base.target), constants):
            written.append(str(base.target))
    if written:
        raise TraceError(
            f"{type(model).__name__}.forward writes into its buffer {written[0]} in place and "
            "reads it again, which torch.fx cannot relate: use --tracer export (auto does)"
        )
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) < len(inputs):
        raise TraceError(f"{type(model).__name__}.forward takes {len(placeholders)} inputs, got {len(inputs)}")
    traced = Traced(model, graph, "fx", placeholders[: len(inputs)], [], {}, model, constants=constants)
    run = MetaRun(model, graph, constants)
    try:
        traced.vals = run.propagate(inputs, placeholders)
    except ShapeError as e:
        cause = e.__cause__ or e
        if data_dependent(e.node):
            raise TraceError(DATA_DEPENDENT.format(where=_where(e.node))) from cause
        raise TraceError(
            f"shape propagation failed at {_where(e.node)}: {_short(cause)}; is the input shape right?"
        ) from cause
    traced._modules.update(run.submodules)  # every call_module target, by the names fx gave them
    traced.outputs = _output_nodes(graph, traced.vals)
    return traced


def _read_for_real(model: nn.Module, target: str, constants: dict[str, torch.Tensor]) -> bool:
    """Whether fx read the tensor at ``target`` for real (a constant that shares its memory): a write into
    the tensor would not reach that read."""
    try:
        t = model.get_buffer(target)
    except AttributeError:
        return False
    ptr = t.untyped_storage().data_ptr()
    return any(isinstance(c, torch.Tensor) and c.untyped_storage().data_ptr() == ptr for c in constants.values())


def _restore(model: nn.Module, before: set[str]) -> dict[str, torch.Tensor]:
    """fx stores tensors made in forward as attributes of the traced module: take them back off."""
    constants = {}
    for name in set(vars(model)) - before:
        constants[name] = getattr(model, name)
        delattr(model, name)
    return constants


def _trace_export(model: nn.Module, inputs: tuple, core: bool = False) -> Traced:
    ep = export_program(model, inputs, core)
    dynamic = unbacked(ep.graph)
    if dynamic is not None:
        raise TraceError(DATA_DEPENDENT.format(where=_where(dynamic)))
    user, param_nodes, outs = split_signature(ep)
    vals = {n: to_meta(n.meta.get("val")) for n in ep.graph.nodes}
    root = ep.graph_module
    return Traced(
        model, ep.graph, "export-core" if core else "export", user, outs, vals, root, param_nodes, dict(ep.constants)
    )


def _output_nodes(graph: fx.Graph, vals: dict) -> list[fx.Node]:
    out = next(n for n in graph.nodes if n.op == "output")
    found: list[fx.Node] = []
    fx.node.map_arg(out.args, lambda n: found.append(n) if isinstance(vals.get(n), torch.Tensor) else None)
    return found


def _where(n: fx.Node) -> str:
    stack = n.meta.get("stack_trace") or ""
    target = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
    where = f"node {n.name} ({n.op} {target})"
    if stack:
        last = [line.strip() for line in stack.strip().splitlines() if line.strip()][-1:]
        where += f" at {last[0]}" if last else ""
    return where


def _short(e: BaseException) -> str:
    """First line of the error, and the innermost line of user code (not torch's) that raised it."""
    text = str(e).strip().splitlines()
    msg = f"{type(e).__name__}: {text[0] if text else ''}"[:300]
    tb, where = e.__traceback__, None
    while tb is not None:
        path = tb.tb_frame.f_code.co_filename
        if "/torch/" not in path and "/connectome/" not in path and "importlib" not in path:
            where = f"{os.path.basename(path)}:{tb.tb_lineno} in {tb.tb_frame.f_code.co_name}"
        tb = tb.tb_next
    return f"{msg} (at {where})" if where else msg

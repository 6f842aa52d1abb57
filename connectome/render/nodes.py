"""What the diagrams need to know about each traced node: shown or not, name, kind, units alive.

Examples
--------
>>> import torch, connectome
>>> m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
>>> nodes = Nodes(connectome.analyze(m, input_shape=(1, 2)))
>>> [(nodes.title(n), nodes.kind(n)) for n in nodes.t.graph.nodes if nodes.visible(n)]
[('input', 'input'), ('0', 'Linear'), ('1', 'ReLU')]
"""

from __future__ import annotations

import operator
import re
from typing import Any

import numpy as np
from torch import fx, nn

from ..analysis import Analysis
from ..graph.status import slots
from ..report import pct

__all__ = ["Nodes", "graph_label", "sparsity_text"]


class Nodes:
    """Per traced node: visible or not, its module path, and its units' liveness."""

    def __init__(self, res: Analysis):
        self.res = res
        self.w = res.walk
        self.t = self.w.graph.traced
        self.dep = self.t.depends_on_input()
        self.inputs = set(self.t.inputs)
        self._live: dict[fx.Node, tuple[np.ndarray, np.ndarray]] = {}

    def visible(self, n: fx.Node) -> bool:
        if n in self.inputs:
            return True
        if n.op not in ("call_module", "call_function", "call_method") or not self.dep[n]:
            return False
        if not slots(self.w.fwd.get(n)):
            return False
        # a getitem that picks one tensor out of a tuple is plumbing
        if not (n.op == "call_function" and n.target is operator.getitem):
            return True
        src: Any = n.args[0]
        return not isinstance(self.t.vals.get(src), (tuple, list))

    def liveness(self, n: fx.Node) -> tuple[np.ndarray, np.ndarray]:
        """(alive from inputs, alive to outputs) per unit of the node's value, tuple slots concatenated."""
        hit = self._live.get(n)
        if hit is None:
            op = self.w.graph.ops.get(n)
            cdim = getattr(op, "cdim", None)
            back = dict(slots(self.w.bwd.get(n)))
            fs, bs = [], []
            for k, s in slots(self.w.fwd.get(n)):
                if isinstance(cdim, int) and k == 0:
                    s = s.with_cdim(cdim)
                f = s.alive_units()
                b = back.get(k)
                fs.append(f)
                bs.append(b.with_cdim(s.cdim).alive_units() if b is not None else np.zeros_like(f))
            hit = (np.concatenate(fs), np.concatenate(bs)) if fs else (np.zeros(0, bool), np.zeros(0, bool))
            self._live[n] = hit
        return hit

    def parts(self, n: fx.Node) -> list[str]:
        """The module path of a node; an op that is not a module call adds its own name as a leaf."""
        if n.op == "call_module":
            return str(n.target).split(".")
        stack = n.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        return (path.split(".") if path else []) + [n.name]

    def module(self, path: str) -> nn.Module | None:
        try:
            return self.t.model.get_submodule(path)
        except (AttributeError, KeyError):
            return None

    def title(self, n: fx.Node) -> str:
        if n in self.inputs:
            return "input" if len(self.inputs) == 1 else n.name
        if n.op == "call_module":
            return str(n.target)
        path = ".".join(self.parts(n)[:-1])
        mod = self.module(path) if path else None
        # under torch.export a module's computation is ATen ops inside it: name them after the module
        return path if mod is not None and not any(True for _ in mod.children()) else n.name

    def kind(self, n: fx.Node) -> str:
        if n in self.inputs:
            return "input"
        if n.op == "call_module":
            return type(self.t.module(n)).__name__
        name = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
        return re.sub(r"\.default$", "", name)


def graph_label(res: Analysis, title: str | None) -> str:
    """The line above a diagram: direct vs effective sparsity, or that the network collapsed.

    >>> import torch, connectome
    >>> graph_label(connectome.analyze(torch.nn.Linear(2, 2), input_shape=(1, 2)), "tiny")
    'tiny: direct sparsity 0.00% (1.0x) · effective 0.00% (1.0x)'
    """
    head = f"{title}: " if title else ""
    if res.collapsed:
        return (
            f"{head}COLLAPSED: no path from the inputs to the outputs "
            f"(direct sparsity {sparsity_text(res.direct_sparsity)})"
        )
    return (
        f"{head}direct sparsity {sparsity_text(res.direct_sparsity)} ({_x(res.direct_compression)}) · "
        f"effective {sparsity_text(res.effective_sparsity)} ({_x(res.effective_compression)})"
    )


def sparsity_text(x: float) -> str:
    """A sparsity as a percentage, with the digits that tell 99.998% from 100%.

    >>> sparsity_text(0.5), sparsity_text(0.99998), sparsity_text(1.0)
    ('50.00%', '99.9980%', '100.00%')
    """
    return f"{100 * x:.4f}%" if 0.9999 < x < 1 else pct(x)  # 99.998%, not a rounded 100.00%


def _x(c: float | None) -> str:
    return "∞" if c is None else f"{c:,.1f}x" if c < 100 else f"{c:,.0f}x"

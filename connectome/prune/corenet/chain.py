"""Which layer is the only reader of another's neurons: what makes CoreNet+'s neuron removal exact.

A neuron that never fires on S can go with all its weights only if everything it feeds drops it too.
When layer B is the *sole* consumer of layer A's output, through a chain of ops that act on each unit
by itself (activations, normalisation, dropout, pooling), B's input column j is A's neuron j: if that
column is zero on all of S, B never samples it, and removing A's incoming weights of neuron j changes
nothing on S. A skip connection, a concatenation or any second reader breaks the chain, and then the
neuron stays (its incoming weights are sampled as usual).

Example: ``sole_readers(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))`` is
``{"0.weight": "2.weight"}``.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

__all__ = ["sole_readers"]

_PER_UNIT_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.Dropout,
    nn.Identity,
    nn.MaxPool2d,
    nn.AvgPool2d,
)
_PER_UNIT_FUNCTIONS = {
    F.relu,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.gelu,
    F.silu,
    F.dropout,
    F.max_pool2d,
    F.avg_pool2d,
    torch.relu,
    torch.tanh,
    torch.sigmoid,
}
_PER_UNIT_METHODS = {"relu", "tanh", "sigmoid"}


def sole_readers(model: nn.Module) -> dict[str, str]:
    """``{layer weight key: the weight key of its sole reader}`` for linear and 2-D convolution layers;
    empty when the model does not trace with torch.fx (no removal is then made).

    >>> sole_readers(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    {'0.weight': '2.weight'}
    """
    try:
        gm = fx.symbolic_trace(model)
    except Exception:  # a model fx cannot trace: CoreNet+ keeps every neuron
        return {}
    modules = dict(gm.named_modules())
    layers = {
        n.target: n
        for n in gm.graph.nodes
        if n.op == "call_module" and isinstance(modules.get(str(n.target)), (nn.Linear, nn.Conv2d))
    }
    found = {}
    for target, node in layers.items():
        cur = node
        while len(cur.users) == 1:
            (nxt,) = cur.users
            if nxt.op == "call_module" and str(nxt.target) in layers and nxt.args and nxt.args[0] is cur:
                found[f"{target}.weight"] = f"{nxt.target}.weight"
                break
            if not _per_unit(nxt, modules) or not nxt.args or nxt.args[0] is not cur:
                break
            cur = nxt
    return found


def _per_unit(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), _PER_UNIT_MODULES)
    if node.op == "call_function":
        return node.target in _PER_UNIT_FUNCTIONS and node.target is not operator.add
    if node.op == "call_method":
        return node.target in _PER_UNIT_METHODS
    return False

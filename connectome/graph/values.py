"""Which fx nodes hold constants: values fixed by the input's shape, not its values, and never random.

The walk folds nodes that do not depend on the inputs into constants. A shape read off an input
(``x.shape[0]``) or a tensor made from one (``zeros_like(x)``) is such a constant; a random draw or an
uninitialised tensor is not (it varies like an input), and a number read off an input's values
(``x.max().item()``) is data.

Examples
--------
>>> import torch
>>> from torch import fx
>>> g = fx.Tracer().trace(torch.nn.Dropout())
>>> [random_values(n) for n in g.nodes]
[False, False, False]
>>> holds_tensor((torch.zeros(1), 2)), holds_tensor(torch.Size([2, 3]))
(True, False)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

__all__ = [
    "SHAPE_ONLY",
    "VALUE_READS",
    "RANDOM",
    "shape_only",
    "random_values",
    "reads_values",
    "zeros_of",
    "writes_in_place",
    "holds_tensor",
]

SHAPE_ONLY = frozenset({"zeros_like", "ones_like", "full_like", "new_zeros", "new_ones", "new_full"})
# non-tensor values read off tensor *values*: data, not shapes
VALUE_READS = frozenset({"item", "_local_scalar_dense", "tolist", "__int__", "__float__", "__bool__", "__index__"})


def shape_only(n: fx.Node) -> bool:
    """A node whose value depends on its tensor argument's shape only (``zeros_like(x)``, ``x.new_zeros(n)``)."""
    target = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "")
    return target.split(".")[0] in SHAPE_ONLY


RANDOM = frozenset(
    {
        "rand",
        "randn",
        "randint",
        "randperm",
        "rand_like",
        "randn_like",
        "randint_like",
        "bernoulli",
        "normal",
        "multinomial",
        "poisson",
        "empty",
        "empty_like",
        "new_empty",
        "empty_strided",
        "native_dropout",
        "uniform",
        "uniform_",
        "normal_",
        "bernoulli_",
        "exponential_",
    }
)


def random_values(n: fx.Node) -> bool:
    """Random (or uninitialised) values vary from call to call like an input, and are never folded."""
    if n.op not in ("call_function", "call_method"):
        return False
    target = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "")
    return str(target).split(".")[0] in RANDOM


def reads_values(n: fx.Node) -> bool:
    """A number read off a tensor's values (``x.sum().item()``): it depends on the data."""
    target = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "")
    return str(target).split(".")[0] in VALUE_READS


def zeros_of(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return torch.zeros(v.shape, dtype=v.dtype)
    return v


def writes_in_place(n: fx.Node) -> bool:
    target = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "")
    target = str(target).split(".")[0]
    return (target.endswith("_") and not target.startswith("_")) or target.startswith("__i")


def holds_tensor(v: Any) -> bool:
    if isinstance(v, torch.Tensor):
        return True
    return isinstance(v, (tuple, list)) and any(holds_tensor(x) for x in v)

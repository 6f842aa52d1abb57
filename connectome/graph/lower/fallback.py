"""The two ops every other rule falls back on: :class:`Fallback` (all-to-all, for an op without a rule or
a case a rule cannot read) and :class:`Constant` (a value that does not depend on the inputs).

A fallback can only call too many weights effective, never too few, and the op is listed in the report's
``unsupported_ops`` so that the user knows where the analysis is loose.

Examples
--------
>>> import torch
>>> from connectome.graph.status import Status
>>> op = Fallback(torch.zeros(2, 3), [torch.zeros(4)])
>>> op.forward([Status.uniform((4,), 0, True)]).full().shape     # one live input: all of the output
(2, 3)
>>> bool(op.forward([Status.uniform((4,), 0, True)]).full().all())
True
"""

from __future__ import annotations

from typing import Any

import torch

from ..status import Status, any_alive
from .base import Op

__all__ = ["Fallback", "Constant", "uniform_like"]


class Fallback(Op):
    """All-to-all: alive everywhere if any input is alive anywhere (and back)."""

    multi = True
    couples = True
    supported = False

    def __init__(self, out: Any, in_shapes: list, reason: str = ""):
        self.out, self.in_shapes, self.reason = out, in_shapes, reason

    def forward(self, ins: list[Any]) -> Any:
        alive = any(any_alive(s) for s in ins)
        return uniform_like(self.out, alive, zero=False)

    def backward(self, ins: list[Any], out: Any, grad: Any) -> list[Any]:
        if not any_alive(grad):
            return [None] * len(ins)
        return [uniform_like(v, True) if v is not None else None for v in self.in_shapes]


class Constant(Op):
    """A value computed from parameters and constants only: dead from input, whatever the op.

    Its prunable weights (if any: a layer applied to a constant) are owned by no op and so reported
    as ineffective, like any weight that sees no input.
    """

    def __init__(self, out: Any):
        self.out = out

    def forward(self, ins: list[Any]) -> Any:
        return uniform_like(self.out, False, zero=False)

    def backward(self, ins: list[Any], out: Any, grad: Any) -> list[Any]:
        return []


def uniform_like(v: Any, alive: bool, zero: bool = True) -> Any:
    if isinstance(v, torch.Tensor):
        shape = tuple(v.shape)
        return Status.uniform(shape, 1 if len(shape) > 1 else 0, alive).with_zero(zero)
    if isinstance(v, (tuple, list)):
        return tuple(uniform_like(x, alive, zero) for x in v)
    return None

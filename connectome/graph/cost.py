"""What an analysis will hold in memory, known from the traced shapes before any of it is made.

The walk keeps, for each tensor computed from the inputs, a table of liveness patterns over its
positions (batch and spatial positions, or tokens): about one byte per position, twice (the forward
and the backward walk). One step (a convolution's taps, a pooling window) briefly holds some twenty
bytes per position of its input and output. So the bill is ``2 * sum(positions) + 24 * max(step)``;
it grows with the input's area and its batch, not with the channels.

Examples
--------
>>> import torch
>>> from .trace import trace
>>> m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
>>> walk_bytes(trace(m, input_shape=(1, 3, 100, 100)))   # 3 tensors of 10,000 positions; a step reads 2
540000
"""

from __future__ import annotations

from typing import Any

import torch

from .trace import Traced

__all__ = ["walk_bytes", "positions", "activation_bytes"]

STEP_BYTES = 24  # per position of a step's input and output (numbered copies, taps, pattern tables)
KEPT_BYTES = 2  # per position of each tensor: its forward and backward pattern


def positions(v: Any) -> int:
    """Positions of a value (elements per channel), summed over a tuple's tensors."""
    if isinstance(v, torch.Tensor):
        # channels first (N, C, H, W) or last (N, T, E): the fewer channels, the more positions
        channels = min(v.shape[1], v.shape[-1]) if v.dim() > 2 else v.shape[-1] if v.dim() else 1
        return v.numel() // max(int(channels), 1)
    if isinstance(v, (tuple, list)):
        return sum(positions(x) for x in v)
    return 0


def walk_bytes(traced: Traced) -> int:
    """Bytes the lowering and the walk of ``traced`` are expected to need at their peak."""
    dep = traced.depends_on_input()
    total = step = 0
    for node in traced.graph.nodes:
        if not dep.get(node):
            continue
        out = positions(traced.vals.get(node))
        ins = sum(positions(traced.vals.get(a)) for a in node.all_input_nodes if dep.get(a))
        total += out
        step = max(step, out + ins)
    return KEPT_BYTES * total + STEP_BYTES * step


def activation_bytes(traced: Traced) -> int:
    """Bytes of every tensor computed from the inputs: what one eager forward pass holds for autograd.

    >>> import torch
    >>> from .trace import trace
    >>> activation_bytes(trace(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()), input_shape=(2, 4)))
    80
    """
    dep = traced.depends_on_input()
    total = 0
    for node in traced.graph.nodes:
        if dep.get(node):
            total += _nbytes(traced.vals.get(node))
    return total


def _nbytes(v: Any) -> int:
    if isinstance(v, torch.Tensor):
        return v.numel() * v.element_size()
    if isinstance(v, (tuple, list)):
        return sum(_nbytes(x) for x in v)
    return 0

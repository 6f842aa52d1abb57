"""The engine: trace a model, lower it to a unit graph, walk it from the inputs and the outputs.

Nothing here imports a product (analysis, audit, render, prune): they are built on it.

Examples
--------
>>> import torch
>>> from connectome.graph import trace, lower, walk
>>> from connectome.io import MaskSource
>>> m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
>>> w = walk(lower(trace(m, input_shape=(1, 3)), MaskSource(m)))
>>> sorted(w.effective)
['0.weight', '2.weight']
"""

from .lower import RULES, UnitGraph, lower
from .status import Status
from .trace import Traced, TraceError, trace
from .walk import Walk, walk

__all__ = ["trace", "Traced", "TraceError", "lower", "UnitGraph", "RULES", "walk", "Walk", "Status"]

"""Loading and writing: model specs, checkpoints, where masks come from, and atomic writes.

Examples
--------
>>> import torch
>>> from connectome.io import MaskSource, parse_shape
>>> parse_shape("1,3,8,8")
[(1, 3, 8, 8)]
>>> m = torch.nn.Sequential(torch.nn.Linear(2, 2))
>>> MaskSource(m)["0.weight"].shape
torch.Size([2, 2])
"""

from .checkpoint import Checkpoint, load
from .masks import MaskSource, prunable_weights
from .spec import SpecError, load_model, parse_shape

__all__ = ["Checkpoint", "load", "MaskSource", "prunable_weights", "SpecError", "load_model", "parse_shape"]

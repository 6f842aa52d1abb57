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

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import names as _names

if TYPE_CHECKING:
    from .checkpoint import Checkpoint, load
    from .masks import MaskSource, prunable_weights
    from .spec import SpecError, load_model, parse_shape

# on first use: connectome.io.errors is imported before torch (see connectome/__init__.py)
_WHERE = {
    "Checkpoint": ".checkpoint",
    "load": ".checkpoint",
    "MaskSource": ".masks",
    "prunable_weights": ".masks",
    "SpecError": ".spec",
    "load_model": ".spec",
    "parse_shape": ".spec",
}
__all__ = ["Checkpoint", "load", "MaskSource", "prunable_weights", "SpecError", "load_model", "parse_shape"]

__getattr__ = _names(__name__, _WHERE)

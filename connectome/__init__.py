"""connectome: effective sparsity of pruned PyTorch models.

>>> import torch, connectome
>>> m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
>>> res = connectome.analyze(m, input_shape=(1, 4))
>>> res.params_total == res.params_nonzero == res.params_effective
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import names as _names

if TYPE_CHECKING:
    from .analysis import Analysis, Analyzer, analyze
    from .graph.lower import RULES, UnitGraph, lower
    from .graph.status import Status
    from .graph.trace import Traced, TraceError, trace
    from .graph.walk import Walk, walk
    from .io.checkpoint import Checkpoint, load
    from .io.masks import MaskSource, prunable_weights

# Imported on first use, so that ``import connectome.hf.firstpass`` does not import torch: the audit of a
# model folder starts reading its shards with that module while torch is still being imported.
_WHERE = {
    "analyze": ".analysis",
    "Analysis": ".analysis",
    "Analyzer": ".analysis",
    "load": ".io.checkpoint",
    "Checkpoint": ".io.checkpoint",
    "trace": ".graph.trace",
    "Traced": ".graph.trace",
    "TraceError": ".graph.trace",
    "lower": ".graph.lower",
    "UnitGraph": ".graph.lower",
    "RULES": ".graph.lower",
    "walk": ".graph.walk",
    "Walk": ".graph.walk",
    "Status": ".graph.status",
    "MaskSource": ".io.masks",
    "prunable_weights": ".io.masks",
}
__all__ = [
    "analyze",
    "Analysis",
    "Analyzer",
    "load",
    "Checkpoint",
    "trace",
    "Traced",
    "TraceError",
    "lower",
    "UnitGraph",
    "RULES",
    "walk",
    "Walk",
    "Status",
    "MaskSource",
    "prunable_weights",
]
__version__ = "0.1.0"

__getattr__ = _names(__name__, _WHERE)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

"""connectome: effective sparsity of pruned PyTorch models.

>>> import torch, connectome
>>> m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
>>> res = connectome.analyze(m, input_shape=(1, 4))
>>> res.params_total == res.params_nonzero == res.params_effective
True
"""

from .analysis import Analysis, Analyzer, analyze
from .graph.lower import RULES, UnitGraph, lower
from .graph.status import Status
from .graph.trace import Traced, TraceError, trace
from .graph.walk import Walk, walk
from .io.checkpoint import Checkpoint, load
from .io.masks import MaskSource, prunable_weights

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

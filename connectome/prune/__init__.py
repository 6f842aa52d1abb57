"""Pruning as graph operations: layer quotas, scores, selection, and effective-sparsity targeting.

Three separate pieces: a *quota* says how much of each layer to keep (:mod:`.quotas`), a *score* says
which weights are worth keeping (:mod:`.scores`, one file per method), and *selection* turns scores into
masks with exact kept counts (:mod:`.select`). :func:`prune` runs them, optionally aiming at the
effective sparsity; :func:`save` writes the result in ``torch.nn.utils.prune`` form.

>>> import torch
>>> m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> p = prune(m, "magnitude", 0.5, input_shape=(1, 8))
>>> p.kept, round(p.analysis.direct_sparsity, 3)
(40, 0.5)
"""

from .quotas import QUOTAS, PruneError, budget, kept_counts
from .run import Pruned, prune
from .save import save
from .scores import SCORES
from .select import select

__all__ = ["PruneError", "prune", "Pruned", "save", "select", "SCORES", "QUOTAS", "budget", "kept_counts"]

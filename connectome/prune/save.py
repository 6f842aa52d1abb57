"""Writing pruned weights: a state_dict in ``torch.nn.utils.prune`` form, or a mask file.

Never a whole-model pickle: the file loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import copy
import io

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..io.files import write_atomic

__all__ = ["save", "pruned_state_dict"]


def pruned_state_dict(model: nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state_dict of a copy of ``model`` with each mask applied by ``torch.nn.utils.prune``:
    ``<name>_orig`` (the weight) and ``<name>_mask`` (0/1) in place of ``<name>``.

    >>> m = torch.nn.Linear(2, 2)
    >>> sorted(pruned_state_dict(m, {"weight": torch.eye(2, dtype=torch.bool)}))
    ['bias', 'weight_mask', 'weight_orig']
    """
    clone = copy.deepcopy(model)
    for name, mask in masks.items():
        mod_name, _, attr = name.rpartition(".")
        module = clone.get_submodule(mod_name) if mod_name else clone
        torch_prune.custom_from_mask(module, attr, mask.to(torch.float32))
    return clone.state_dict()


def save(model: nn.Module, masks: dict[str, torch.Tensor], path: str, masks_only: bool = False) -> None:
    """Write the pruned state_dict (or, with ``masks_only``, ``{name: bool mask}``) to ``path`` atomically.

    >>> import os, tempfile
    >>> m = torch.nn.Linear(2, 2)
    >>> path = os.path.join(tempfile.mkdtemp(), "pruned.pt")
    >>> save(m, {"weight": torch.eye(2, dtype=torch.bool)}, path)
    >>> sorted(torch.load(path, weights_only=True))
    ['bias', 'weight_mask', 'weight_orig']
    """
    data = {k: v.bool() for k, v in masks.items()} if masks_only else pruned_state_dict(model, masks)
    buf = io.BytesIO()
    torch.save(data, buf)
    write_atomic(path, buf.getvalue())

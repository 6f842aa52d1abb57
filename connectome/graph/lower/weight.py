"""What an op knows of a prunable weight it reads: key, kind, mask, and how an operand maps back to it.

Examples
--------
>>> import torch
>>> w = Weight("fc.weight", "linear", torch.ones(2, 3, dtype=torch.bool))
>>> w.keys
('fc.weight',)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Weight"]


@dataclass
class Weight:
    """A prunable weight an op reads: its key (:class:`~connectome.graph.names.WeightNames`), kind and 0/1 mask.

    When the op reads a view of the parameter (a slice, a transpose), ``mask`` has the operand's
    shape and ``index`` holds, per operand element, its flat index in the parameter. When it reads a
    tensor computed from parameters (``s * W``, a standardised ``W``), ``mask`` is the computed tensor's
    support and ``back`` maps an operand-shaped mask to the parameters the operand depends on.
    """

    name: str
    kind: str
    mask: torch.Tensor
    index: torch.Tensor | None = None
    reduced: Any = None  # masks.Reduced when the mask was prefetched
    backmap: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None
    keys: tuple[str, ...] = ()  # every parameter key behind the operand (default: ``name``)
    support: dict[str, torch.Tensor] = field(default_factory=dict)  # computed support, per key

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys = (self.name,)

    def to_param(self, m: torch.Tensor, shape: tuple) -> torch.Tensor:
        """An operand-shaped effective mask as a parameter-shaped one."""
        if self.index is None:
            return m
        full = torch.zeros(int(torch.tensor(shape).prod()) if shape else 1, dtype=torch.bool)
        full[self.index.reshape(-1)[m.reshape(-1)]] = True
        return full.reshape(shape)

    def back(self, m: torch.Tensor, shape: Callable[[str], tuple]) -> dict[str, torch.Tensor]:
        """The operand-shaped effective mask ``m`` as parameter-shaped masks, by key."""
        if self.backmap is not None:
            return self.backmap(m)
        return {self.name: self.to_param(m, shape(self.name))}

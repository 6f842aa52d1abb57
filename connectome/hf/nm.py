"""N:M structure: groups of M consecutive weights along a layer's input dimension, and how many of them
keep at most N. 2:4 sparse kernels need every group of 4 to keep at most 2.

One pass per layer counts, for each group size M in ``SIZES``, how many groups keep 0, 1, ..., M
weights; any N:M claim with those M is then answered from the counts. A last, shorter group (an
input dimension that M does not divide) counts as a group.

Examples
--------
>>> import torch
>>> mask = torch.tensor([[1, 1, 0, 0, 1, 0, 1, 1]], dtype=torch.bool)
>>> c = nm_count(mask)
>>> c.groups(4), c.conforming(2, 4), c.violations(2, 4)
(2, 1, 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["NMCount", "group_hist", "nm_count", "parse_structure", "SIZES"]

SIZES = (4, 8)


@dataclass
class NMCount:
    """Per group size M: ``hist[M][k]`` = groups of M consecutive weights that keep exactly k."""

    hist: dict[int, list[int]]
    axis: int  # the dimension the groups run along (the layer's input dimension)

    def groups(self, m: int) -> int:
        return sum(self.hist[m])

    def conforming(self, n: int, m: int) -> int:
        """Groups of ``m`` keeping at most ``n`` weights."""
        return sum(self.hist[m][: n + 1])

    def violations(self, n: int, m: int) -> int:
        return self.groups(m) - self.conforming(n, m)

    def share(self, n: int, m: int) -> float:
        g = self.groups(m)
        return self.conforming(n, m) / g if g else 1.0

    def to_dict(self) -> dict:
        return {"axis": self.axis, "groups_keeping": {str(m): h for m, h in self.hist.items()}}


def nm_count(mask: torch.Tensor, axis: int = -1, sizes: tuple[int, ...] = SIZES) -> NMCount:
    """Count, along ``axis`` (default: the last, a linear layer's input), groups by how many they keep.

    >>> import torch
    >>> nm_count(torch.ones(3, 8, dtype=torch.bool)).hist[4]
    [0, 0, 0, 0, 6]
    """
    import torch  # here, not above: the first reads of a folder import this module before torch

    a = mask.detach().numpy() if mask.dtype == torch.bool else (mask != 0).numpy()
    axis = axis % a.ndim if a.ndim else 0
    a = np.moveaxis(a, axis, -1) if a.ndim else a.reshape(1)
    flat = a.reshape(-1, a.shape[-1])
    hist = {m: group_hist(flat, m) for m in sizes}
    return NMCount(hist, axis)


def group_hist(rows: np.ndarray, m: int) -> list[int]:
    """How many groups of ``m`` consecutive entries of each row of a 2-D bool array keep 0..m entries
    (a last, shorter group counts as a group).

    >>> group_hist(np.array([[1, 1, 0, 0, 1]], bool), 4)
    [0, 1, 1, 0, 0]
    """
    r, n = rows.shape
    pad = (-n) % m
    g = rows if not pad else np.concatenate([rows, np.zeros((r, pad), bool)], axis=1)
    kept = g.reshape(r, -1, m).view(np.uint8).sum(-1, dtype=np.uint8)
    return np.bincount(kept.reshape(-1), minlength=m + 1)[: m + 1].tolist()


def parse_structure(text: str) -> tuple[int, int]:
    """``"2:4"`` -> ``(2, 4)``; M must be one of the counted sizes.

    >>> parse_structure("2:4")
    (2, 4)
    """
    try:
        n, m = (int(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"bad structure {text!r}: write N:M, e.g. 2:4") from None
    if m not in SIZES or not 0 <= n < m:
        raise ValueError(f"bad structure {text!r}: N:M with M in {', '.join(map(str, SIZES))} and 0 <= N < M")
    return n, m

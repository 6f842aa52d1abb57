"""Independent random streams from one seed.

``torch.manual_seed(s)`` followed by a model's initialisation draws the very uniforms that
``torch.Generator().manual_seed(s)`` draws: random pruning scores taken from such a generator keep, in
every layer whose size matches, the weights that started largest, not a random subset. Every stream
connectome draws for itself is therefore seeded from ``(purpose, seed)`` through a hash, unrelated to
the global stream of the same seed and to each other.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["generator"]


def generator(seed: int, purpose: str) -> torch.Generator:
    """A CPU generator for ``purpose`` derived from ``seed``; the same pair gives the same stream.

    >>> a, b = generator(0, "prune"), torch.Generator().manual_seed(0)
    >>> bool(torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b)))
    False
    >>> c, d = generator(0, "prune"), generator(0, "prune")
    >>> bool(torch.equal(torch.rand(4, generator=c), torch.rand(4, generator=d)))
    True
    """
    digest = hashlib.sha256(f"connectome:{purpose}:{int(seed)}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)

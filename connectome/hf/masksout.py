"""Effective masks to a safetensors file, one tensor at a time (the header first: shapes are known).

A mask is stored as ``BOOL`` (one byte per weight), under its parameter's name; the file loads with
``safetensors.torch.load_file`` and back into ``connectome audit --masks``.

Examples
--------
>>> import os, tempfile, torch
>>> from safetensors.torch import load_file
>>> p = os.path.join(tempfile.mkdtemp(), "eff.safetensors")
>>> write_masks(p, [("a.weight", (2, 2))], lambda name: torch.tensor([[True, False], [False, True]]))
>>> load_file(p)["a.weight"].tolist()
[[True, False], [False, True]]
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from ..io.files import write_chunks

__all__ = ["write_masks"]


def write_masks(
    path: str,
    shapes: Sequence[tuple[str, tuple[int, ...]]],
    mask: Callable[[str], torch.Tensor],
    inputs: tuple[str | None, ...] = (),
    metadata: dict[str, str] | None = None,
) -> None:
    """Write ``mask(name)`` for each ``(name, shape)`` in order; each mask is made when it is written."""
    header: dict = {"__metadata__": dict(metadata or {"format": "pt", "written_by": "connectome"})}
    offset = 0
    for name, shape in shapes:
        n = math.prod(shape)
        header[name] = {"dtype": "BOOL", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the data starts 8-byte aligned

    def chunks() -> Iterator[bytes]:
        yield struct.pack("<Q", len(head)) + head
        for name, shape in shapes:
            m = mask(name)
            if tuple(m.shape) != tuple(shape):
                raise ValueError(f"the mask of {name} has shape {tuple(m.shape)}, not {tuple(shape)}")
            yield np.ascontiguousarray(m.detach().to(torch.bool).numpy()).tobytes()

    write_chunks(path, chunks(), inputs)

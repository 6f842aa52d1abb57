"""compressed-tensors' sparse formats, decoded by connectome itself.

compressed-tensors 0.14 was the last version to write ``sparse-bitmask`` and ``sparse-24-bitmask``;
later versions cannot read them. A compressed weight ``P`` is stored as ``P.shape`` (its dense shape),
``P.bitmask`` (one bit per weight, rows packed to bytes little-endian first), ``P.compressed`` (the
values at the set bits, in row-major order) and, for ``sparse-bitmask``, ``P.row_offsets``. ``P`` is
the module's name (``model.layers.0.mlp.down_proj``) or, in files of older versions, the weight's
(``...down_proj.weight``). In ``sparse-24-bitmask`` the set bits are the two kept positions of every
four, which may hold zeros: the mask is the set bits whose values are nonzero.

Examples
--------
>>> import numpy as np, torch
>>> bits = torch.from_numpy(np.packbits(np.array([[1, 0, 1], [0, 0, 1]], bool), axis=-1, bitorder="little"))
>>> decode((2, 3), bits, torch.tensor([5.0, 0.0, 7.0])).tolist()
[[5.0, 0.0, 0.0], [0.0, 0.0, 7.0]]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..io.errors import SpecError, clip

if TYPE_CHECKING:
    import torch

__all__ = ["MEMBERS", "group_keys", "decode"]

MEMBERS = ("bitmask", "compressed", "shape", "row_offsets")


def group_keys(keys: list[str]) -> dict[str, dict[str, str]]:
    """Weight name -> {member: stored key} for every compressed weight among ``keys``.

    >>> found = group_keys(["a.bitmask", "a.compressed", "a.shape", "b.weight.bitmask", "b.weight.compressed",
    ...                     "b.weight.shape", "c.weight"])
    >>> sorted(found), found["b.weight"]["bitmask"]
    (['a.weight', 'b.weight'], 'b.weight.bitmask')
    """
    present = set(keys)
    out: dict[str, dict[str, str]] = {}
    for key in keys:
        if not key.endswith(".bitmask"):
            continue
        prefix = key[: -len(".bitmask")]
        members = {m: f"{prefix}.{m}" for m in MEMBERS if f"{prefix}.{m}" in present}
        if "compressed" not in members or "shape" not in members:
            raise SpecError(f"{clip(key)} has no matching .compressed and .shape tensors: the file is incomplete")
        out[prefix if prefix.endswith(".weight") else prefix + ".weight"] = members
    return out


def decode(shape: tuple[int, ...], bitmask: torch.Tensor, values: torch.Tensor, name: str = "") -> torch.Tensor:
    """The dense tensor of ``shape`` with ``values`` at the set bits of ``bitmask`` (zeros elsewhere)."""
    import torch  # here, not above: the first reads of a folder import this module before torch

    if not shape or any(d < 0 for d in shape):
        raise SpecError(f"{clip(name)}: stored shape {shape} is not a tensor shape")
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    bits = bitmask.contiguous().view(torch.uint8).numpy().reshape(rows, -1)
    if bits.shape[1] * 8 < shape[-1]:
        raise SpecError(f"{clip(name)}: its bitmask is narrower than its shape {shape}: the file is corrupt")
    where = np.unpackbits(bits, axis=-1, count=shape[-1], bitorder="little").astype(bool).reshape(shape)
    flat = values.reshape(-1)
    if int(where.sum()) != flat.numel():
        raise SpecError(
            f"{clip(name)}: its bitmask sets {int(where.sum()):,} positions but {flat.numel():,} values are stored: "
            "the file is corrupt"
        )
    dense = torch.zeros(shape, dtype=values.dtype)
    if values.dtype.itemsize == 1 and values.is_floating_point():  # fp8 has no CPU indexing: copy its bytes
        dense.view(torch.uint8)[torch.from_numpy(where)] = flat.view(torch.uint8)
    else:
        dense[torch.from_numpy(where)] = flat
    return dense

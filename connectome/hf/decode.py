"""Stored tensors as nonzero masks: dense floats of every width (bf16, fp16, fp32, fp8) read by their bits.

A float is zero when every bit but the sign is zero, so ``-0.0`` is zero and NaN is not: the mask is
read from an integer view, which works for dtypes torch cannot compare on a CPU (fp8). Formats whose
values cannot be told apart from their storage (packed int4 and the like) are refused by name.

Examples
--------
>>> import torch
>>> nonzero_bits(torch.tensor([0.0, -0.0, 1e-40, float("nan")], dtype=torch.bfloat16)).tolist()
[False, False, True, True]
"""

from __future__ import annotations

import numpy as np
import torch

from ..io.errors import SpecError
from ..io.tensors import clip

__all__ = ["nonzero_bits", "nonfinite_bits", "FLOATS", "check_dtype", "storage_format"]

_INT_VIEW = {
    torch.float64: (torch.int64, 0x7FFF_FFFF_FFFF_FFFF),
    torch.float32: (torch.int32, 0x7FFF_FFFF),
    torch.float16: (torch.int16, 0x7FFF),
    torch.bfloat16: (torch.int16, 0x7FFF),
}
for _name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"):
    if hasattr(torch, _name):
        _INT_VIEW[getattr(torch, _name)] = (torch.uint8, 0x7F)

FLOATS = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
_INTS = {"I64", "I32", "I16", "I8", "U8", "BOOL", "U16", "U32", "U64"}


_READS = "dense bf16/fp16/fp32/fp8 and compressed-tensors' sparse-bitmask formats"
# compressed-tensors formats whose stored zeros are the weight's zeros (fp8 scales multiply)
_CT_FORMATS = {"dense", "float-quantized", "sparse-bitmask", "sparse-24-bitmask"}
_FP8_METHODS = {"fp8", "fbgemm_fp8"}


def storage_format(config: dict) -> str:
    """How the folder stores its weights, from config.json; refuses, in one line, formats whose zeros are
    not the weights' zeros (packed int4, int8 with zero points...).

    >>> storage_format({}), storage_format({"quantization_config": {"quant_method": "fp8"}})
    ('dense', 'fp8')
    >>> storage_format({"quantization_config": {"quant_method": "gptq", "bits": 4}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    connectome.io.errors.SpecError: the weights are stored gptq-quantized: connectome cannot read their zeros ...
    """
    q = config.get("quantization_config") or config.get("compression_config")
    if not isinstance(q, dict):
        return "dense"
    method = str(q.get("quant_method") or ("compressed-tensors" if "sparsity_config" in q else ""))
    if method == "compressed-tensors":
        fmt = str(q.get("format") or "dense")
        if fmt in _CT_FORMATS:
            return fmt
        what = f"in compressed-tensors' {fmt} format"
    elif method in _FP8_METHODS:
        return "fp8"
    else:
        what = f"{method or 'unknown-method'}-quantized"
    raise SpecError(
        f"the weights are stored {clip(what, 60)}: connectome cannot read their zeros (it reads {_READS}); "
        "audit the unquantized checkpoint"
    )


def check_dtype(key: str, dtype: str) -> None:
    """Refuse, in one line, a stored dtype whose zeros cannot be read from the tensor alone."""
    if dtype in FLOATS or dtype in _INTS:
        return
    raise SpecError(f"{clip(key)} is stored as {clip(dtype, 20)}: connectome cannot read its zeros (it reads {_READS})")


def nonzero_bits(t: torch.Tensor) -> torch.Tensor:
    """``t != 0`` as a bool tensor, read from the bits (one vectorised pass, no float compare).

    >>> nonzero_bits(torch.tensor([[0, 3], [0, 0]], dtype=torch.int8)).tolist()
    [[False, True], [False, False]]
    """
    view = _INT_VIEW.get(t.dtype)
    if view is None:
        return t != 0
    as_int = t.contiguous().view(view[0]).numpy()
    return torch.from_numpy(np.bitwise_and(as_int, as_int.dtype.type(view[1])) != 0)


_EXPONENT = {
    torch.float64: 0x7FF0_0000_0000_0000,
    torch.float32: 0x7F80_0000,
    torch.float16: 0x7C00,
    torch.bfloat16: 0x7F80,
}
if hasattr(torch, "float8_e5m2"):
    _EXPONENT[torch.float8_e5m2] = 0x7C
if hasattr(torch, "float8_e4m3fn"):
    _EXPONENT[torch.float8_e4m3fn] = 0x7F  # no infinities: NaN is the one all-ones pattern


def nonfinite_bits(t: torch.Tensor) -> int:
    """How many entries of a float tensor are NaN or infinite, read from the exponent bits.

    >>> nonfinite_bits(torch.tensor([1.0, float("inf"), float("nan"), -0.0], dtype=torch.float16))
    2
    """
    exp = _EXPONENT.get(t.dtype)
    if exp is None:
        return int((~torch.isfinite(t)).sum()) if t.is_floating_point() else 0
    a = t.contiguous().view(_INT_VIEW[t.dtype][0]).numpy()
    e = a.dtype.type(exp)
    return int(np.count_nonzero(np.bitwise_and(a, e) == e))

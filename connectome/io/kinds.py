"""Kinds of tensors in loaded weights and masks: which are refused, which converted, and why.

A checkpoint or a mask file is never silently altered. Per kind:

- **dense real tensors** (float, integer, bool) are used as they are.
- **expanded views** (a stride-0 ``expand``, an overlapping ``as_strided``) that declare more than
  64 MB and more than 1 MB beyond their storage are refused (``re-save it with .contiguous()``): any
  product or copy of one would allocate what it declares, not what the file holds. Smaller ones are
  read through.
- **meta** tensors have no data: refused (``save the weights after loading them``).
- **complex** weights are not supported (a weight's zero set is what is analysed; a complex number
  has no single magnitude to prune by): refused, except a checkpoint's complex buffer for a model
  buffer that is complex itself (rotary-embedding tables), which loads unchanged.
- **nested** tensors and unknown layouts: refused.
- **sparse** tensors (COO, CSR, CSC, BSR, BSC) are converted to dense, with a note, once their
  shape matched the model's parameter, so that the dense size is the parameter's size. Their values
  are kept (a COO tensor's duplicate entries add up, as ``to_dense`` does).
- **quantized** tensors are dequantized, with a note. An entry dequantizes to exactly zero when its
  integer representation equals the zero point; this is checked for every entry, and a tensor where
  it does not hold (a zero or non-finite scale) is refused, since its mask would change.

A model (the architecture) whose own parameters are meta or complex is refused the same way, with
expanded views among its parameters and buffers.

Examples
--------
>>> import torch
>>> notes = []
>>> out = plain({"w": torch.eye(2).to_sparse()}, "m.pt", notes)
>>> out["w"].layout, out["w"].tolist(), notes
(torch.strided, [[1.0, 0.0], [0.0, 1.0]], ['converted 1 sparse tensor(s) to dense'])
>>> screen({"w": torch.zeros(2, device="meta")}, "m.pt")
Traceback (most recent call last):
...
connectome.io.errors.SpecError: m.pt holds meta tensors, which have no data (w): save the weights after loading them
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from .. import memory
from .errors import SpecError
from .tensors import clip, expanded

__all__ = ["screen", "refuse_complex", "plain", "check_model", "depth", "too_deep"]

_SPARSE = {
    torch.sparse_coo: lambda t: (t._indices(), t._values()),
    torch.sparse_csr: lambda t: (t.crow_indices(), t.col_indices(), t.values()),
    torch.sparse_bsr: lambda t: (t.crow_indices(), t.col_indices(), t.values()),
    torch.sparse_csc: lambda t: (t.ccol_indices(), t.row_indices(), t.values()),
    torch.sparse_bsc: lambda t: (t.ccol_indices(), t.row_indices(), t.values()),
}


def _view_error(where: str, name: str, t: torch.Tensor) -> SpecError | None:
    """An expanded view among ``t``'s strided parts (a sparse tensor's indices and values), or None."""
    parts = _SPARSE[t.layout](t) if t.layout in _SPARSE else (t,)
    for p in parts:
        size, stored = p.numel() * p.element_size(), p.untyped_storage().nbytes()
        if expanded(size, stored):
            return SpecError(
                f"{where}: {clip(name)} is an expanded view that declares {p.numel():,} elements over a storage "
                f"of {stored // max(p.element_size(), 1):,}: re-save it with .contiguous()"
            )
    return None


def screen(tensors: Mapping[str, torch.Tensor], where: str) -> None:
    """Refuse what no model can use (meta, nested, unknown layouts, expanded views); reads no data."""
    for name, t in tensors.items():
        if t.is_meta:
            raise SpecError(
                f"{where} holds meta tensors, which have no data ({clip(name)}): save the weights after loading them"
            )
        if t.is_nested or (t.layout != torch.strided and t.layout not in _SPARSE):
            raise SpecError(
                f"{where}: {clip(name)} is a {'nested' if t.is_nested else str(t.layout)} tensor, which is not "
                f"supported: save it as a dense tensor"
            )
        bad = _view_error(where, name, t)
        if bad is not None:
            raise bad


def refuse_complex(tensors: Mapping[str, torch.Tensor], where: str, allowed: Iterable[str] = ()) -> None:
    """Refuse complex tensors but those named in ``allowed`` (complex buffers of the model)."""
    ok = set(allowed)
    for name, t in tensors.items():
        if t.is_complex() and name not in ok:
            raise SpecError(
                f"complex weights are not supported: {where} holds {clip(name)} as {t.dtype}; save the real "
                f"weights (or .real and .imag as separate tensors)"
            )


def plain(tensors: Mapping[str, torch.Tensor], where: str, notes: list[str]) -> dict[str, torch.Tensor]:
    """The same tensors, sparse ones dense and quantized ones dequantized (see the module notes).

    Call it after the shapes were checked against the model: a dense copy is then the model's size.
    """
    out, sparse, quantized = {}, 0, 0
    for name, t in tensors.items():
        if t.layout != torch.strided:
            memory.reserve(t.numel() * t.element_size(), f"{clip(name)} as a dense tensor")
            t, sparse = t.to_dense(), sparse + 1
        if t.is_quantized:
            memory.reserve(t.numel() * 7, f"dequantizing {clip(name)}")  # float32 values, int repr, two masks
            t, quantized = _dequantize(name, t, where), quantized + 1
        out[name] = t
    if sparse:
        notes.append(f"converted {sparse} sparse tensor(s) to dense")
    if quantized:
        notes.append(f"dequantized {quantized} quantized tensor(s)")
    return out


def _dequantize(name: str, t: torch.Tensor, where: str) -> torch.Tensor:
    """``t.dequantize()``, refused unless its zeros are exactly the entries at the zero point."""
    ints = t.int_repr()
    if t.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        at_zero = ints == t.q_zero_point()
    else:  # per channel: one zero point along the axis
        shape = [1] * ints.dim()
        shape[t.q_per_channel_axis()] = -1
        at_zero = ints == t.q_per_channel_zero_points().reshape(shape)
    values = t.dequantize()
    if not torch.equal(at_zero, values == 0):
        raise SpecError(
            f"{where}: quantized {clip(name)} has entries that dequantize to zero away from its zero point "
            f"(a zero or non-finite scale), so its mask is ambiguous: dequantize it before saving"
        )
    return values


def depth(model: nn.Module) -> int:
    """How deep modules nest inside ``model``, walked without recursion.

    >>> depth(nn.Sequential(nn.Sequential(nn.Linear(2, 2))))
    2
    """
    deepest, todo, seen = 0, [(model, 0)], set()
    while todo:
        m, d = todo.pop()
        if id(m) not in seen:
            seen.add(id(m))
            deepest = max(deepest, d)
            todo.extend((c, d + 1) for c in m._modules.values() if c is not None)
    return deepest


def too_deep(model: nn.Module, what: str) -> SpecError:
    """The error for a model that torch's recursive walks over modules (``named_modules``,
    ``state_dict``) cannot walk: they raise RecursionError near Python's recursion limit."""
    return SpecError(
        f"{clip(what, 60)} nests its modules {depth(model)} deep, past Python's recursion limit "
        f"({sys.getrecursionlimit()}): flatten the nesting (e.g. one nn.Sequential of all the layers)"
    )


def check_model(model: nn.Module, what: str) -> None:
    """Refuse a model whose parameters are meta or complex, or hold expanded views (buffers too), or
    that nests its modules too deep to be walked."""
    try:
        _check_model(model, what)
    except RecursionError:
        raise too_deep(model, what) from None


def _check_model(model: nn.Module, what: str) -> None:
    for name, p in model.named_parameters():
        if p.is_meta:
            raise SpecError(
                f"{clip(what)} has meta parameters, which have no data ({clip(name)}): build it on the CPU, "
                f"or load its weights before passing it"
            )
        if p.is_complex():
            raise SpecError(
                f"complex weights are not supported: {clip(what)} has the parameter {clip(name)} as {p.dtype}"
            )
    for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
        if not t.is_meta:
            bad = _view_error(clip(what), name, t)
            if bad is not None:
                raise bad

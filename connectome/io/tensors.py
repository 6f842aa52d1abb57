"""Read a checkpoint file safely: state_dicts by ``torch.load(weights_only=True)`` or safetensors, and
whole-model pickles only when trusted; a corrupt or truncated file is a one-line :class:`SpecError`.

Examples
--------
>>> import os, tempfile, torch
>>> path = os.path.join(tempfile.mkdtemp(), "w.pt")
>>> torch.save({"w": torch.ones(2)}, path)
>>> obj, fmt = read_tensors(path)
>>> sorted(obj), fmt
(['w'], 'torch (zip)')
"""

from __future__ import annotations

import os
import pickle
import zipfile
from typing import Any

import torch

from .errors import SpecError

__all__ = ["read_tensors", "check_file", "first_line"]


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def check_file(path: str, what: str = "checkpoint") -> None:
    if not os.path.exists(path):
        raise SpecError(f"no such {what} file: {path}")
    if os.path.isdir(path):
        inside = sorted(f for f in os.listdir(path) if f.endswith((".pt", ".pth", ".bin", ".safetensors")))
        hint = f" (it holds {', '.join(inside[:3])})" if inside else ""
        raise SpecError(f"{path} is a directory, not a {what} file: give the file inside it{hint}")
    if os.path.getsize(path) == 0:
        raise SpecError(f"{path} is empty (0 bytes): re-save or re-download it")


def _looks_safetensors(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return path.endswith(".safetensors") or (len(head) == 9 and head[8:9] == b"{")


def read_tensors(path: str, trust: bool = False) -> tuple[Any, str]:
    """The object stored in a checkpoint file and its format name; safe unless ``trust``.

    Returns a dict for state_dicts (``.pt``/``.pth``/``.bin``/``.safetensors``) and, with ``trust``,
    whatever a whole-model pickle holds. Raises :class:`SpecError` with a one-line reason otherwise.
    """
    check_file(path)
    if _looks_safetensors(path):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise SpecError("reading .safetensors needs the safetensors package: pip install safetensors") from None
        try:
            return load_file(path, device="cpu"), "safetensors"
        except Exception as e:
            raise SpecError(
                f"{path} is not a readable safetensors file ({first_line(e)}): it may be truncated "
                f"or corrupt; re-download or re-save it"
            ) from None
    with open(path, "rb") as f:
        magic = f.read(4)
    kind = "zip" if magic[:2] == b"PK" else "legacy"
    if kind == "legacy" and magic[:1] != b"\x80":
        raise SpecError(
            f"{path} is not a PyTorch or safetensors checkpoint (it starts with {magic!r}); "
            f"save weights with torch.save(model.state_dict(), path)"
        )
    if kind == "zip":
        _verify_zip(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True), f"torch ({kind})"
    except pickle.UnpicklingError as e:
        if "weights_only" not in str(e) and "Weights only" not in str(e):
            raise SpecError(f"{path} is truncated or corrupt ({first_line(e)}); re-download or re-save it") from None
        if not trust:
            raise SpecError(
                f"{path} holds pickled Python objects (a whole model?), and unpickling can run "
                f"arbitrary code: pass --trust only if you trust its author, or re-save it with "
                f"torch.save(model.state_dict(), path)"
            ) from None
    except (
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        OSError,
        ValueError,
        KeyError,
        IndexError,
        AttributeError,
        TypeError,
        MemoryError,
        OverflowError,
        UnicodeDecodeError,
    ) as e:
        raise SpecError(f"{path} is truncated or corrupt ({first_line(e)}); re-download or re-save it") from None
    try:  # trusted whole-model pickle
        return torch.load(path, map_location="cpu", weights_only=False), f"pickle ({kind})"
    except Exception as e:
        raise SpecError(
            f"cannot unpickle {path} ({first_line(e)}): the classes it needs may not be importable here"
        ) from None


def _verify_zip(path: str) -> None:
    """torch.save writes a CRC-32 per record but torch.load never checks it: check it here, so that a
    flipped bit in the weights is reported instead of silently analysed."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (
        zipfile.BadZipFile,
        OSError,
        EOFError,
        ValueError,
        KeyError,
        NotImplementedError,
        OverflowError,
        UnicodeDecodeError,
    ) as e:
        raise SpecError(f"{path} is truncated or corrupt ({first_line(e)}); re-download or re-save it") from None
    if bad is not None:
        raise SpecError(f"{path} is corrupt: record {bad!r} fails its CRC-32 check; re-download or re-save it")

"""Read a checkpoint file safely: state_dicts by ``torch.load(weights_only=True)`` or safetensors, and
whole-model pickles only when trusted; a corrupt, truncated or hostile file is a one-line :class:`SpecError`.

Before ``torch.load`` sees a file, what it declares is compared with what it is: a zip's records with
the file's size (a record that declares more than the file holds, or more than 1000x its compressed
size, is a zip bomb or damage), a legacy file's storages with the file's size (``torch.load`` allocates
them as declared), every tensor view with its storage (a stride-0 ``expand`` of one element can
declare terabytes), and every zip record with its CRC-32. Only regular files are opened (opening a FIFO
to read it would block until something writes to it).

Messages name the user's path (clipped to :data:`CLIP` characters) and the fix, never an errno.

Examples
--------
>>> import os, tempfile, torch
>>> path = os.path.join(tempfile.mkdtemp(), "w.pt")
>>> torch.save({"w": torch.ones(2)}, path)
>>> obj, fmt = read_tensors(path)
>>> sorted(obj), fmt
(['w'], 'torch (zip)')
>>> clip("x" * 100)[-5:], len(clip("x" * 100)), clip_path("/a" * 50)[:6]
('xx...', 80, '...a/a')
"""

from __future__ import annotations

import io
import os
import pickle
import stat
import zipfile
from typing import Any

import torch

from .. import memory
from . import pickles
from .errors import CLIP, SpecError, clip, clip_path, first_line

__all__ = ["read_tensors", "check_file", "first_line", "clip", "clip_path", "reason", "CLIP"]

VIEW_FLOOR = 64 * 2**20  # a view declaring fewer bytes than this is read through, whatever its storage
VIEW_SLACK = 2**20  # bytes a view may declare beyond its storage
DEFLATE_RATIO = 1000  # deflate cannot do better than ~1032:1
_CORRUPT = "is truncated or corrupt"
_KINDS = {  # stat's file types other than regular files and folders
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def reason(e: OSError) -> str:
    """``[Errno 13] Permission denied: 'x'`` -> ``permission denied``."""
    return (e.strerror or first_line(e)).lower()


def check_file(path: str, what: str = "checkpoint") -> int:
    """The size of ``path`` if it is a readable regular file; a one-line :class:`SpecError` otherwise.

    Only ``stat`` is called: a FIFO is never opened (reading one blocks until a writer comes).
    """
    shown = clip_path(path)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise SpecError(f"no such {what} file: {shown}") from None
    except PermissionError:
        raise SpecError(f"cannot reach {shown}: a folder on its path is not readable; fix its permissions") from None
    except (OSError, ValueError) as e:  # a name too long, a loop of links, a NUL byte
        raise SpecError(f"cannot read {shown}: {reason(e) if isinstance(e, OSError) else first_line(e)}") from None
    if stat.S_ISDIR(st.st_mode):
        try:
            inside = sorted(f for f in os.listdir(path) if f.endswith((".pt", ".pth", ".bin", ".safetensors")))
        except OSError:
            inside = []
        hint = f" (it holds {clip(', '.join(inside[:3]))})" if inside else ""
        raise SpecError(f"{shown} is a directory, not a {what} file: give the file inside it{hint}")
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a file")
        raise SpecError(f"{shown} is not a regular file: it is {kind}; give the path of a saved {what} file")
    if st.st_size == 0:
        raise SpecError(f"{shown} is empty (0 bytes): re-save or re-download it")
    if not os.access(path, os.R_OK):
        raise SpecError(_unreadable(path))
    return st.st_size


def _unreadable(path: str) -> str:
    return f"cannot read {clip_path(path)}: permission denied; make it readable (chmod u+r) or run as its owner"


def _head(path: str, n: int) -> bytes:
    """The first ``n`` bytes; opened non-blocking and checked to be a regular file once open."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except PermissionError:
        raise SpecError(_unreadable(path)) from None
    except OSError as e:
        raise SpecError(f"cannot read {clip_path(path)}: {reason(e)}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since check_file looked
            raise SpecError(f"{clip_path(path)} is not a regular file: give the path of a saved file")
        return os.read(fd, n)
    except OSError as e:
        raise SpecError(f"cannot read {clip_path(path)}: {reason(e)}") from None
    finally:
        os.close(fd)


def read_tensors(path: str, trust: bool = False, what: str = "checkpoint") -> tuple[Any, str]:
    """The object stored in a checkpoint file and its format name; safe unless ``trust``.

    Returns a dict for state_dicts (``.pt``/``.pth``/``.bin``/``.safetensors``) and, with ``trust``,
    whatever a whole-model pickle holds. Raises :class:`SpecError` with a one-line reason otherwise,
    and :class:`~connectome.memory.MemoryBudgetError` when the file would need more than the budget.
    """
    size = check_file(path, what)
    shown = clip_path(path)
    head = _head(path, 9)
    if path.endswith(".safetensors") or (len(head) == 9 and head[8:9] == b"{"):
        return _read_safetensors(path, size), "safetensors"
    kind = "zip" if head[:2] == b"PK" else "legacy"
    if kind == "legacy" and head[:1] != b"\x80":
        raise SpecError(
            f"{shown} is not a PyTorch or safetensors checkpoint (it starts with {clip(repr(head[:4]), 24)}); "
            f"save weights with torch.save(model.state_dict(), path)"
        )
    if kind == "zip":
        _verify_zip(path, size)
    else:
        _verify_legacy(path, size)
    try:
        return torch.load(path, map_location="cpu", weights_only=True), f"torch ({kind})"
    except pickle.UnpicklingError as e:
        if "weights_only" not in str(e) and "Weights only" not in str(e):
            raise SpecError(f"{shown} {_CORRUPT} ({first_line(e)}); re-download or re-save it") from None
        if not trust:
            raise SpecError(
                f"{shown} holds pickled Python objects (a whole model?), and unpickling can run "
                f"arbitrary code: pass --trust only if you trust its author, or re-save it with "
                f"torch.save(model.state_dict(), path)"
            ) from None
    except Exception as e:
        raise _load_error(path, size, e) from None
    try:  # trusted whole-model pickle
        return torch.load(path, map_location="cpu", weights_only=False), f"pickle ({kind})"
    except (MemoryError, OSError) as e:
        raise _load_error(path, size, e) from None
    except Exception as e:
        raise SpecError(
            f"cannot unpickle {shown} ({first_line(e)}): the classes it needs may not be importable here"
        ) from None


def _load_error(path: str, size: int, e: BaseException) -> SpecError:
    """One line for what ``torch.load`` raised."""
    shown = clip_path(path)
    if isinstance(e, MemoryError) or "can't allocate memory" in str(e):
        return SpecError(
            f"not enough memory to load {shown} ({memory.human(size)} on disk): free memory, or use a machine with more"
        )
    if isinstance(e, PermissionError):
        return SpecError(_unreadable(path))
    if isinstance(e, OSError):
        return SpecError(f"cannot read {shown}: {reason(e)}; check the disk or copy the file again")
    return SpecError(f"{shown} {_CORRUPT} ({first_line(e)}); re-download or re-save it")


def _read_safetensors(path: str, size: int) -> dict[str, torch.Tensor]:
    """safetensors checks every declared shape and offset against the file before it allocates."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise SpecError("reading .safetensors needs the safetensors package: pip install safetensors") from None
    memory.reserve(size, f"loading {clip_path(path)}")
    try:
        return load_file(path, device="cpu")
    except PermissionError:
        raise SpecError(_unreadable(path)) from None
    except Exception as e:
        if isinstance(e, MemoryError):
            raise _load_error(path, size, e) from None
        raise SpecError(
            f"{clip_path(path)} is not a readable safetensors file ({first_line(e)}): it may be truncated "
            f"or corrupt; re-download or re-save it"
        ) from None


def _bomb(path: str, declared: int, record: str, size: int) -> SpecError:
    return SpecError(
        f"{clip_path(path)} declares {memory.human(declared)} for record {clip(record, 60)!r} in a "
        f"{memory.human(size)} file: a zip bomb or a corrupt file; re-save it"
    )


def _view_error(path: str, view: pickles.View) -> SpecError:
    return SpecError(
        f"{clip_path(path)} holds an expanded view that declares {view.numel:,} elements over a storage of "
        f"{view.storage_numel:,}: re-save it with .contiguous()"
    )


def expanded(nbytes: int, storage_nbytes: int) -> bool:
    """A view that declares far more bytes than its storage holds (a stride-0 ``expand``, ``as_strided``)."""
    return nbytes > VIEW_FLOOR and nbytes > storage_nbytes + VIEW_SLACK


def _screen(path: str, found: pickles.Declared) -> None:
    for view in found.views:
        if expanded(view.nbytes, view.storage_nbytes):
            raise _view_error(path, view)


def _verify_zip(path: str, size: int) -> None:
    """Refuse records that declare more than they can hold or than the memory budget allows, then check
    every CRC-32 (torch.load never does, so a flipped bit in the weights would be analysed silently).

    The records' sizes are read from the central directory alone: nothing is decompressed before they
    pass, so a zip bomb costs nothing.
    """
    total = 0
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
                    raise SpecError(
                        f"{clip_path(path)} is corrupt: record {clip(info.filename, 60)!r} is stored uncompressed "
                        f"but declares {info.file_size:,} bytes in {info.compress_size:,}; re-download or re-save it"
                    )
                bound = size if info.compress_type == zipfile.ZIP_STORED else DEFLATE_RATIO * info.compress_size
                if info.file_size > bound:
                    raise _bomb(path, info.file_size, info.filename, size)
                total += info.file_size
            memory.reserve(total, f"loading {clip_path(path)}")
            bad = z.testzip()
            pkl = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
            if bad is None and pkl is not None:  # read whole: genops reads byte by byte
                _screen(path, pickles.declared(io.BytesIO(z.read(pkl))))
    except (SpecError, memory.MemoryBudgetError):
        raise
    except Exception as e:  # BadZipFile, EOFError, NotImplementedError, a damaged pickle...
        raise _load_error(path, size, e) from None
    if bad is not None:
        raise SpecError(
            f"{clip_path(path)} is corrupt: record {clip(bad, 60)!r} fails its CRC-32 check; re-download or re-save it"
        )


def _verify_legacy(path: str, size: int) -> None:
    """A legacy file: magic number, protocol and system-info pickles, the state pickle, its storage keys,
    then the storages' bytes. ``torch.load`` allocates each storage as the state pickle declares it,
    before reading its data: refuse declarations the file cannot hold."""
    try:
        with open(path, "rb") as f:
            for _ in range(3):
                pickles.skip(f)
            found = pickles.declared(f)
    except OSError as e:
        raise _load_error(path, size, e) from None
    except Exception:  # not a legacy torch file after all: torch.load says what it is
        found = pickles.Declared()
    if found.storage_bytes > size:
        raise SpecError(
            f"{clip_path(path)} declares {memory.human(found.storage_bytes)} of tensor data in a "
            f"{memory.human(size)} file: a corrupt or hostile file; re-save it"
        )
    _screen(path, found)
    memory.reserve(size, f"loading {clip_path(path)}")

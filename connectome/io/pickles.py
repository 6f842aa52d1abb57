"""What a PyTorch pickle declares, read without unpickling it: its storages and the tensor views on them.

``torch.load`` allocates a legacy (non-zip) file's storages at the size its pickle declares, before it
reads a byte of their data, and it rebuilds views (``expand``, ``as_strided``) of any size over a storage
of one element. :func:`declared` walks the pickle's opcodes with :mod:`pickletools` and keeps a model of
the unpickler's stack that knows literals, tuples, the memo, globals, persistent ids and calls, and
nothing else (every other value is opaque). Nothing is imported or called, so a hostile pickle can only
waste the time it takes to read it. It is a screen, not a parser: what it cannot follow it leaves out,
and ``torch.load`` still checks the file.

Examples
--------
>>> import io, torch
>>> buf = io.BytesIO()
>>> torch.save({"w": torch.zeros(1).expand(3, 4)}, buf, _use_new_zipfile_serialization=False)
>>> _ = buf.seek(0)
>>> for _ in range(3): skip(buf)  # the legacy header: magic number, protocol, system info
>>> d = declared(buf)
>>> d.storage_bytes, [(v.numel, v.storage_numel) for v in d.views]
(4, [(12, 1)])
"""

from __future__ import annotations

import math
import pickletools
from dataclasses import dataclass, field
from typing import IO, Any

__all__ = ["Declared", "View", "declared", "skip"]

# functions that rebuild a strided tensor: (storage, storage_offset, size, stride, ...)
_REBUILDS = {"_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_qtensor"}
_SIZES = {  # bytes per element of torch's typed storage classes, by name
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "ComplexFloatStorage": 8,
    "ComplexDoubleStorage": 16,
    "QInt32Storage": 4,
}
_LITERALS = {  # opcodes that push their argument
    op.name
    for op in pickletools.opcodes
    if not op.stack_before
    and [s.name for s in op.stack_after]
    in (["int"], ["int_or_bool"], ["bytes_or_str"], ["bytes"], ["str"], ["float"], ["None"])
}
_MARK_BELOW = {  # opcodes that pop to a mark -> how many items they pop below it
    op.name: [s.name for s in op.stack_before].index("mark")
    for op in pickletools.opcodes
    if "mark" in [s.name for s in op.stack_before]
}


class _Opaque:
    __slots__ = ()


_OPAQUE = _Opaque()


@dataclass(frozen=True)
class _Global:
    module: str
    name: str


@dataclass(frozen=True)
class _Storage:
    key: str
    element_size: int
    numel: int  # elements the views may address (a legacy view's own size when it has one)


@dataclass(frozen=True)
class View:
    """A tensor the pickle rebuilds: how many elements it declares over how many in its storage."""

    numel: int
    storage_numel: int
    element_size: int

    @property
    def nbytes(self) -> int:
        return self.numel * self.element_size

    @property
    def storage_nbytes(self) -> int:
        return self.storage_numel * self.element_size


@dataclass
class Declared:
    """Root storages (key -> bytes) and tensor views a pickle declares."""

    storages: dict[str, int] = field(default_factory=dict)
    views: list[View] = field(default_factory=list)

    @property
    def storage_bytes(self) -> int:
        return sum(self.storages.values())


def skip(stream: IO[bytes]) -> None:
    """Move ``stream`` past one pickle (up to and including its STOP)."""
    for _ in pickletools.genops(stream):
        pass


def declared(stream: IO[bytes]) -> Declared:
    """The storages and views of the pickle at ``stream``'s position (which ends up after it).

    Raises what :func:`pickletools.genops` raises on a damaged pickle (ValueError, EOFError...).
    """
    out = Declared()
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[Any, Any] = {}
    for op, arg, _ in pickletools.genops(stream):
        name = op.name
        if name == "MARK":
            marks.append(len(stack))
        elif name in _MARK_BELOW:  # pops to the last mark, and the items below it (a list to extend...)
            start = marks.pop() if marks else 0
            items = stack[start:]
            del stack[start:]
            del stack[max(len(stack) - _MARK_BELOW[name], 0) :]
            if name == "TUPLE":
                stack.append(tuple(items))
            elif name != "POP_MARK":
                stack.extend([_OPAQUE] * len(op.stack_after))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = stack[-n:]
            del stack[-n:]
            stack.append(tuple(items))
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1] if stack else _OPAQUE
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else _OPAQUE
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(arg, _OPAQUE))
        elif name == "DUP":
            stack.append(stack[-1] if stack else _OPAQUE)
        elif name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            stack.append(_Global(module, attr))
        elif name == "STACK_GLOBAL":
            top, below = (stack.pop() if stack else _OPAQUE), (stack.pop() if stack else _OPAQUE)
            if isinstance(below, str) and isinstance(top, str):
                stack.append(_Global(below, top))
            else:
                stack.append(_OPAQUE)
        elif name == "BINPERSID":
            stack.append(_persistent(stack.pop() if stack else _OPAQUE, out))
        elif name == "REDUCE":
            args, fn = (stack.pop() if stack else _OPAQUE), (stack.pop() if stack else _OPAQUE)
            _rebuild(fn, args, out)
            stack.append(_OPAQUE)
        elif name == "STOP":
            break
        elif name in ("NEWTRUE", "NEWFALSE"):
            stack.append(name == "NEWTRUE")
        elif name in _LITERALS:
            stack.append(arg)
        else:  # anything else: pop what it takes, push opaque values
            if op.stack_before:
                del stack[max(len(stack) - len(op.stack_before), 0) :]
            stack.extend([_OPAQUE] * len(op.stack_after))
    return out


def _persistent(pid: Any, out: Declared) -> Any:
    """``('storage', StorageType, key, location, numel[, view_metadata])`` -> a storage, and record it."""
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
        return _OPAQUE
    kind, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
        return _OPAQUE
    size = _SIZES.get(kind.name, 1) if isinstance(kind, _Global) else 1
    out.storages[str(key)] = numel * size
    view = pid[5] if len(pid) == 6 else None
    if isinstance(view, tuple) and len(view) == 3 and isinstance(view[2], int):
        numel = view[2]  # a legacy storage view: (view_key, offset, view_size)
    return _Storage(str(key), size, numel)


def _rebuild(fn: Any, args: Any, out: Declared) -> None:
    if not (isinstance(fn, _Global) and fn.module == "torch._utils" and fn.name in _REBUILDS):
        return
    if not (isinstance(args, tuple) and len(args) >= 4 and isinstance(args[0], _Storage)):
        return
    size = args[2]
    if not (isinstance(size, tuple) and all(isinstance(d, int) and d >= 0 for d in size)):
        return
    storage = args[0]
    out.views.append(View(math.prod(size), storage.numel, storage.element_size))

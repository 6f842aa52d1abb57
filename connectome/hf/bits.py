"""A stored matrix's :class:`~connectome.hf.kernel.Stats`, read straight from its shard.

Floats are read by their bits (value bits for zero, exponent bits for NaN/Inf), integers whole. A
float matrix whose mask is not kept is read in row chunks of ``CHUNK`` bytes into two reused buffers
and counted a word at a time (:mod:`connectome.hf.swar`): memory holds two chunks, whatever the
tensor's size, and no page of the shard stays mapped. Otherwise (a mask kept, GPT-2's transposed
Conv1D, integers, rows not in whole groups of 8) the tensor's bytes are mapped (``mmap``) and viewed
as integers of the dtype's width, and the map is closed before the next tensor.

Examples
--------
>>> import os, tempfile, torch
>>> from safetensors.torch import save_file
>>> from connectome.hf.folder import Folder
>>> d = tempfile.mkdtemp()
>>> save_file({"w": torch.tensor([[0.0, 1.0], [0.0, -0.0]], dtype=torch.bfloat16)}, os.path.join(d, "m.safetensors"))
>>> open(os.path.join(d, "config.json"), "w").write("{}")
2
>>> f = Folder.open(d)
>>> s = stored_stats(f, f.entries["w"])
>>> s.count, s.rows.tolist(), s.cols.tolist()
(1, [True, False], [False, True])
"""

from __future__ import annotations

import contextlib
import gc
import mmap
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..io.errors import SpecError
from .folder import DTYPE_BYTES, Entry, Folder
from .kernel import Stats, summarize
from .swar import fits, summarize_words

__all__ = ["BITS", "CHUNK", "by_words", "stored_stats"]

# safetensors dtype -> (integer view, value bits, exponent bits); exponent 0: no NaN/Inf check
BITS: dict[str, tuple[type, int, int]] = {
    "F64": (np.int64, 0x7FFF_FFFF_FFFF_FFFF, 0x7FF0_0000_0000_0000),
    "F32": (np.int32, 0x7FFF_FFFF, 0x7F80_0000),
    "F16": (np.int16, 0x7FFF, 0x7C00),
    "BF16": (np.int16, 0x7FFF, 0x7F80),
    "F8_E4M3": (np.uint8, 0x7F, 0x7F),  # no infinities: NaN is the one all-ones pattern
    "F8_E5M2": (np.uint8, 0x7F, 0x7C),
    "I64": (np.int64, -1, 0),
    "I32": (np.int32, -1, 0),
    "I16": (np.int16, -1, 0),
    "I8": (np.int8, -1, 0),
    "U8": (np.uint8, 0xFF, 0),
    "BOOL": (np.uint8, 0xFF, 0),
}


def stored_stats(folder: Folder, entry: Entry, axis: int = -1, keep: bool = False) -> Stats:
    """The stats of a stored tensor of two or more dims, N:M groups along ``axis`` (last or first)."""
    kind, vbits, ebits = BITS[entry.dtype]
    n = entry.numel
    nbytes = n * DTYPE_BYTES[entry.dtype]
    if by_words(entry, axis, keep):
        return _by_chunks(os.path.join(folder.path, entry.shard), entry, kind, ebits)
    with open(os.path.join(folder.path, entry.shard), "rb") as f:
        base = entry.start - entry.start % mmap.ALLOCATIONGRANULARITY
        if nbytes == 0:
            return summarize(np.zeros(entry.shape, kind).reshape(-1, entry.shape[-1] if entry.shape else 1), vbits)
        mm = mmap.mmap(f.fileno(), entry.start - base + nbytes, access=mmap.ACCESS_READ, offset=base)
    try:
        a: np.ndarray = np.frombuffer(mm, dtype=kind, count=n, offset=entry.start - base).reshape(-1, entry.shape[-1])
        s = _mapped(a, entry, axis, keep)
        del a
    finally:
        _close(mm)
    return s


def by_words(entry: Entry, axis: int, keep: bool) -> bool:
    kind, vbits, _ = BITS[entry.dtype]
    return not keep and axis != 0 and fits(np.zeros((1, entry.shape[-1] if entry.shape else 0), kind), vbits)


def _mapped(a: np.ndarray, entry: Entry, axis: int, keep: bool) -> Stats:
    _, vbits, ebits = BITS[entry.dtype]
    if axis == 0 and len(entry.shape) == 2:
        s = summarize(a.T, vbits, ebits, keep=keep)
        s.rows, s.cols = s.cols, s.rows
        if s.mask is not None:
            s.mask = np.ascontiguousarray(s.mask.T)
        return s
    return summarize(a, vbits, ebits, keep=keep)


CHUNK = 16 << 20  # bytes read at a time: two buffers of this size, the next read while this one is counted


def _by_chunks(path: str, entry: Entry, kind: type, ebits: int) -> Stats:
    """The stats of a float matrix read in row chunks into two reused buffers, the next chunk read (in a
    thread) while this one is counted: the page cache is copied once, no page of the shard is mapped.
    A chunk that had to be waited for is counted by one thread: with a disk slower than one thread
    counts, more threads would only spin, taking the CPU the reads need."""
    cols = entry.shape[-1]
    row_bytes = cols * np.dtype(kind).itemsize
    rows = entry.numel // cols
    step = max(1, CHUNK // row_bytes)
    bufs = [np.empty(step * row_bytes // 8, np.uint64) for _ in range(2)]
    parts = []
    fd = os.open(path, os.O_RDONLY)
    try:

        def read(r: int, buf: np.ndarray) -> np.ndarray:
            k = min(step, rows - r)
            view = memoryview(buf.data).cast("B")[: k * row_bytes]
            got, off = 0, entry.start + r * row_bytes
            while got < len(view):
                n = os.preadv(fd, [view[got:]], off + got)
                if n == 0:
                    raise SpecError(f"{entry.shard} ends inside a tensor: the shard is truncated; download it again")
                got += n
            return buf[: k * row_bytes // 8].view(kind).reshape(k, cols)

        with ThreadPoolExecutor(1, thread_name_prefix="connectome-chunk") as pool:
            nxt = pool.submit(read, 0, bufs[0])
            for i, r in enumerate(range(0, rows, step)):
                ready = nxt.done()
                chunk = nxt.result()
                if r + step < rows:
                    nxt = pool.submit(read, r + step, bufs[(i + 1) % 2])
                parts.append(summarize_words(chunk, ebits, None if ready else 1))
    finally:
        os.close(fd)
    return _join(parts)


def _join(parts: list[Stats]) -> Stats:
    first = parts[0]
    if len(parts) == 1:
        return first
    return Stats(
        sum(p.count for p in parts),
        np.concatenate([p.rows for p in parts]),
        np.logical_or.reduce([p.cols for p in parts]),
        [sum(h) for h in zip(*(p.hist4 for p in parts))],
        [sum(h) for h in zip(*(p.hist8 for p in parts))],
        sum(p.nonfinite for p in parts),
        None,
    )


def _close(mm: mmap.mmap) -> None:
    # A view of the map can outlive ``a`` in a reference cycle (numba's first compile keeps one in a
    # traceback): collect it, and if a view still lives the map is unmapped when that view goes.
    try:
        mm.close()
    except BufferError:
        gc.collect()
        with contextlib.suppress(BufferError):
            mm.close()

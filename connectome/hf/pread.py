"""Count a stored float matrix straight from its shard in one compiled call: reads and counting without the GIL.

:func:`connectome.hf.bits.count_matrices` reads a chunk, then hands it to the counting kernel: two
trips through Python per chunk. While another thread runs Python (the model's trace), each trip waits
for the interpreter lock, and the reads fall behind the disk. Here one compiled function reads the
matrix chunk by chunk with ``pread`` (called from the compiled code) and counts each chunk as it
arrives; the kernel's own read-ahead keeps the disk busy meanwhile. The whole matrix costs one trip.

Examples
--------
>>> import os, tempfile, torch
>>> from safetensors.torch import save_file
>>> from connectome.hf.folder import Folder
>>> d = tempfile.mkdtemp()
>>> w = torch.zeros(3, 8, dtype=torch.bfloat16); w[1, 5] = 2.0
>>> save_file({"w": w}, os.path.join(d, "m.safetensors")); _ = open(os.path.join(d, "config.json"), "w").write("{}")
>>> f = Folder.open(d)
>>> s = count_stored(f.path, f.entries["w"], buffer(1 << 20)) if available() else None
>>> (s.count, s.rows.tolist()) if s is not None else (1, [False, True, False])
(1, [False, True, False])
"""

from __future__ import annotations

import os
import sys

import numpy as np

from ..io.errors import SpecError
from .bits import BITS
from .folder import DTYPE_BYTES, Entry
from .kernel import Stats, have_numba, numba
from .swar import as_stats, rep

__all__ = ["available", "buffer", "count_stored"]


def available() -> bool:
    """Whether matrices can be counted this way: numba, on Linux (glibc's ``pread`` and ``errno``)."""
    return have_numba() and sys.platform.startswith("linux")


def buffer(nbytes: int) -> np.ndarray:
    """A reusable read buffer of ``nbytes`` (rounded up to whole words)."""
    return np.empty(-(-nbytes // 8), np.uint64)


def count_stored(root: str, entry: Entry, buf: np.ndarray, fd: int | None = None) -> Stats:
    """The stats of a float matrix that fits words (:func:`connectome.hf.bits.by_words`), read through ``buf``.

    ``fd`` is an open descriptor of its shard (else the shard under ``root`` is opened for the call)."""
    _, vbits, ebits = BITS[entry.dtype]
    width = DTYPE_BYTES[entry.dtype] * 8
    words = entry.shape[-1] * width // 64
    rows = entry.numel // entry.shape[-1]
    if buf.size < words:  # one row is more than the buffer: a buffer of one row
        buf = buffer(words * 8)
    own = fd is None
    if fd is None:
        fd = os.open(os.path.join(root, entry.shard), os.O_RDONLY)
    try:
        status, errno, *res = _stream(
            fd, entry.start, rows, words, rep(vbits, width), rep(ebits, width), ebits != 0, width, buf
        )
    finally:
        if own:
            os.close(fd)
    if status == 1:
        raise SpecError(f"{entry.shard} ends inside a tensor: the shard is truncated; download it again")
    if status == 2:
        raise SpecError(f"cannot read {entry.shard}: {os.strerror(errno)}")
    return as_stats(width, *res)


if numba is not None:
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    from .swar import _span

    @intrinsic
    def _pread(typingctx, fd, address, nbytes, offset):  # pragma: no cover - compiled
        """libc's ``pread``, called by name from compiled code (no address baked in: the cache stays valid)."""
        sig = types.int64(types.int64, types.intp, types.int64, types.int64)

        def codegen(context, builder, signature, args):
            i64, i8p = ir.IntType(64), ir.IntType(8).as_pointer()
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(i64, [ir.IntType(32), i8p, i64, i64]), "pread"
            )
            f, a, n, o = args
            return builder.call(fn, [builder.trunc(f, ir.IntType(32)), builder.inttoptr(a, i8p), n, o])

        return sig, codegen

    @intrinsic
    def _errno(typingctx):  # pragma: no cover - compiled; glibc's errno location (other libcs: 0)
        sig = types.int64()

        def codegen(context, builder, signature, args):
            i32p = ir.IntType(32).as_pointer()
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32p, []), "__errno_location")
            return builder.sext(builder.load(builder.call(fn, [])), ir.IntType(64))

        return sig, codegen

    @numba.njit(nogil=True, cache=True)
    def _stream(fd, start, R, Wd, V, E, finite, width, buf):  # pragma: no cover - compiled
        """(status, errno, count, rows, column flags, h4, h8, bad); status 1: the file ended, 2: a read failed."""
        acc = np.zeros(Wd, np.uint64)
        rows = np.zeros(R, np.bool_)
        h4 = np.zeros(5, np.int64)
        h8 = np.zeros(9, np.int64)
        cnt = 0
        bad = 0
        step = max(1, buf.size // Wd)
        r = 0
        while r < R:
            k = min(step, R - r)
            want = k * Wd * 8
            got = 0
            while got < want:
                n = _pread(fd, buf.ctypes.data + got, want - got, start + r * Wd * 8 + got)
                if n == 0:
                    return 1, 0, cnt, rows, acc, h4, h8, bad
                if n < 0:
                    e = _errno()
                    if e == 4:  # EINTR: a signal came; read again
                        continue
                    return 2, e, cnt, rows, acc, h4, h8, bad
                got += n
            c, b = _span(buf[: k * Wd].reshape(k, Wd), V, E, finite, width, 0, k, acc, rows[r : r + k], h4, h8)
            cnt += c
            bad += b
            r += k
        return 0, 0, cnt, rows, acc, h4, h8, bad

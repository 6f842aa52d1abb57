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
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..io.errors import SpecError
from .bits import BITS, CHUNK
from .direct import PAGE, ShardFile, aligned
from .folder import DTYPE_BYTES, Entry
from .kernel import Stats, have_numba, numba
from .swar import as_stats, rep

__all__ = ["available", "buffer", "count_stored", "read_mask", "read_masks"]

_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def available() -> bool:
    """Whether matrices can be counted this way: numba, on Linux (glibc's ``pread`` and ``errno``)."""
    return have_numba() and sys.platform.startswith("linux") and sys.byteorder == "little"


def buffer(nbytes: int) -> np.ndarray:
    """A reusable read buffer for chunks of ``nbytes``, page-aligned for direct reads
    (:func:`~connectome.hf.direct.aligned`)."""
    return aligned(nbytes)


def count_stored(root: str, entry: Entry, buf: np.ndarray, shard: ShardFile | None = None) -> Stats:
    """The stats of a float matrix that fits words (:func:`connectome.hf.bits.by_words`), read through ``buf``.

    ``shard`` is its shard, open (else it is opened for the call); its pages not in the page cache are
    read past it (:class:`~connectome.hf.direct.ShardFile`)."""
    _, vbits, ebits = BITS[entry.dtype]
    width = DTYPE_BYTES[entry.dtype] * 8
    words = entry.shape[-1] * width // 64
    rows = entry.numel // entry.shape[-1]
    if buf.size * 8 < words * 8 + 2 * PAGE:  # one row is more than the buffer: a buffer of one row
        buf = buffer(words * 8)
    res = _read(
        root,
        entry,
        shard,
        1,
        lambda fd, dfd: _stream(
            fd, dfd, entry.start, rows, words, rep(vbits, width), rep(ebits, width), ebits != 0, width, buf
        ),
    )
    return as_stats(width, *res)


def read_mask(root: str, entry: Entry, buf: np.ndarray, shard: ShardFile | None = None) -> np.ndarray:
    """The nonzero mask (bool, ``entry.shape``) of a stored float matrix, read through ``buf`` as
    :func:`count_stored` reads (without the GIL: several threads read several matrices at once)."""
    _, vbits, _ = BITS[entry.dtype]
    size = DTYPE_BYTES[entry.dtype]
    if buf.size * 8 < size + 2 * PAGE:
        buf = buffer(size)
    out = np.empty(entry.numel, np.bool_)
    view = buf.view(_UNSIGNED[size])
    V = view.dtype.type(vbits)
    _read(
        root,
        entry,
        shard,
        size,
        lambda fd, dfd: _mask_stream(fd, dfd, entry.start, entry.numel, size, V, buf, view, out),
    )
    return out.reshape(entry.shape)


def read_masks(root: str, entries: dict[str, Entry], threads: int) -> dict[str, np.ndarray]:
    """:func:`read_mask` of each of ``entries`` (key -> entry), by ``threads`` threads at once."""
    local = threading.local()

    def one(entry: Entry) -> np.ndarray:
        if not hasattr(local, "buf"):
            local.buf = buffer(CHUNK)
        return read_mask(root, entry, local.buf)

    with ThreadPoolExecutor(max(1, min(threads, len(entries))), thread_name_prefix="connectome-mask") as pool:
        return dict(zip(entries, pool.map(one, entries.values())))


def _read(root: str, entry: Entry, shard: ShardFile | None, align: int, kernel: Any) -> list:
    """What ``kernel(fd, dfd)`` returns after (status, errno, direct), run on ``entry``'s shard (``shard``, or
    opened for the call) with a direct descriptor where its pages are not cached; errors as one line."""
    own = shard is None
    if shard is None:
        shard = ShardFile(os.path.join(root, entry.shard))
    try:
        dfd = shard.direct_for(entry.start, entry.start + entry.numel * DTYPE_BYTES[entry.dtype], align)
        status, errno, direct, *res = kernel(shard.fd, dfd)
        if dfd >= 0 and not direct:
            shard.no_direct()
    finally:
        if own:
            shard.close()
    if status == 1:
        raise SpecError(f"{entry.shard} ends inside a tensor: the shard is truncated; download it again")
    if status == 2:
        raise SpecError(f"cannot read {entry.shard}: {os.strerror(errno)}")
    return res


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
    def _fill(fd, dfd, direct, base, first, nbytes):  # pragma: no cover - compiled
        """Read bytes ``first:first + nbytes`` to address ``base``: (status, errno, direct, where ``first``
        landed). A direct read (``dfd``) starts and ends on whole pages; the last partial page of a file,
        or every read once direct ones are refused (EINVAL: a file system that takes O_DIRECT but not
        these reads), goes through ``fd``."""
        at = first - first % PAGE if direct else first
        want = first + nbytes - at
        ask = want + (-want) % PAGE
        got = 0
        while got < want:
            if direct and got % PAGE == 0:
                n = _pread(dfd, base + got, ask - got, at + got)
            else:
                n = _pread(fd, base + got, want - got, at + got)
            if n == 0:
                return 1, 0, direct, 0
            if n < 0:
                err = _errno()
                if err == 4:  # EINTR: a signal came; read again
                    continue
                if err == 22 and direct:
                    direct = False
                    continue
                return 2, err, direct, 0
            got += n
        return 0, 0, direct, first - at

    @numba.njit(nogil=True, cache=True)
    def _stream(fd, dfd, start, R, Wd, V, E, finite, width, buf):  # pragma: no cover - compiled
        """(status, errno, direct, count, rows, column flags, h4, h8, bad); status 1: the file ended, 2: a
        read failed. With ``dfd`` >= 0 each chunk is widened to whole pages and read past the page cache;
        ``direct`` is False when such reads were refused and buffered ones took over."""
        acc = np.zeros(Wd, np.uint64)
        rows = np.zeros(R, np.bool_)
        h4 = np.zeros(5, np.int64)
        h8 = np.zeros(9, np.int64)
        cnt = 0
        bad = 0
        row = Wd * 8
        step = max(1, (buf.size * 8 - 2 * PAGE) // row)
        direct = dfd >= 0
        r = 0
        while r < R:
            k = min(step, R - r)
            status, err, direct, off = _fill(fd, dfd, direct, buf.ctypes.data, start + r * row, k * row)
            if status != 0:
                return status, err, direct, cnt, rows, acc, h4, h8, bad
            if off % 8:  # a matrix not on a word in its file: its words are moved onto the buffer's
                _align(buf, off, k * Wd)
                off = 0
            off //= 8
            c, b = _span(
                buf[off : off + k * Wd].reshape(k, Wd), V, E, finite, width, 0, k, acc, rows[r : r + k], h4, h8
            )
            cnt += c
            bad += b
            r += k
        return 0, 0, direct, cnt, rows, acc, h4, h8, bad

    @numba.njit(nogil=True, cache=True)
    def _align(buf, off, n):  # pragma: no cover - compiled
        """Move the ``n`` words at byte ``off`` of ``buf`` to its start (little-endian)."""
        q = off // 8
        lo = np.uint64((off % 8) * 8)
        hi = np.uint64(64) - lo
        for i in range(n):
            buf[i] = (buf[q + i] >> lo) | (buf[q + i + 1] << hi)

    @numba.njit(nogil=True, cache=True)
    def _flags(v, V, o):  # pragma: no cover - compiled; slices of their own: the loop vectorises
        for j in range(v.size):
            o[j] = (v[j] & V) != 0

    @numba.njit(nogil=True, cache=True)
    def _mask_stream(fd, dfd, start, n, size, V, buf, view, out):  # pragma: no cover - compiled
        """(status, errno, direct) as :func:`_stream`, filling ``out[i] = view lane i & V != 0``."""
        step = max(1, (buf.size * 8 - 2 * PAGE) // size)
        direct = dfd >= 0
        i = 0
        while i < n:
            k = min(step, n - i)
            status, err, direct, off = _fill(fd, dfd, direct, buf.ctypes.data, start + i * size, k * size)
            if status != 0:
                return status, err, direct
            off //= size
            _flags(view[off : off + k], V, out[i : i + k])
            i += k
        return 0, 0, direct

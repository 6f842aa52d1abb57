"""A shard opened for the first pass: read through the page cache where its pages are there, past it where not.

A buffered read of a shard that is not in the page cache costs the reading thread about as much CPU
as the disk takes time (the kernel fills and copies every page): on a 2-core machine, a core the
counting needs. Read with ``O_DIRECT`` the disk writes straight into the reader's buffer and the CPU
stays free. Pages already cached (a second audit, or the bytes the ``connectome`` script read while
it imported) are read buffered, at memory speed: ``mincore`` over a read-only map of the shard says
which are. Direct reads need offsets, lengths and buffer addresses aligned to ``PAGE``; the reading
kernel (:mod:`connectome.hf.pread`) widens each chunk to whole pages. Where this cannot be known or
done (not Linux, a file system without ``O_DIRECT``, a shard this user neither owns nor may write,
for which ``mincore`` says nothing) every read is buffered, as before.

Examples
--------
>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "s.bin")
>>> with open(path, "wb") as f: _ = f.write(bytes(3 * PAGE))
>>> with ShardFile(path) as shard:
...     shard.cached(0, 3 * PAGE) if shard.pages is not None else True  # just written: in the page cache
True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import numpy as np

__all__ = ["PAGE", "ShardFile", "aligned"]

PAGE = 4096  # the alignment of direct reads (a multiple of any disk's logical block)


def aligned(nbytes: int) -> np.ndarray:
    """A buffer of whole words at a ``PAGE``-aligned address, of at least ``nbytes`` plus two pages (a
    chunk widened to whole pages on both ends)."""
    words = -(-nbytes // 8) + 2 * PAGE // 8
    raw = np.empty(words + PAGE // 8, np.uint64)
    skip = (-raw.ctypes.data % PAGE) // 8
    return raw[skip : skip + words]


class ShardFile:
    """A shard's buffered descriptor ``fd``, its direct one ``dfd`` (-1: none) and which pages are cached."""

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        self.dfd = -1
        self.pages: np.ndarray | None = None  # per page: in the page cache when the shard was opened
        try:
            self.pages = _resident(self.fd, path)
            if self.pages is not None and not self.pages.all():
                self.dfd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        except (OSError, AttributeError):  # no O_DIRECT here: every read buffered
            self.pages = None

    def cached(self, start: int, end: int) -> bool:
        """Whether most pages of bytes ``start:end`` were in the page cache (unknown: True, read buffered)."""
        if self.pages is None or end <= start:
            return True
        return bool(self.pages[start // PAGE : -(-end // PAGE)].mean() >= 0.5)

    def direct_for(self, start: int, end: int, align: int = 1) -> int:
        """The descriptor to read bytes ``start:end`` past the page cache, or -1 to read them buffered
        (also where ``start`` is not a multiple of ``align``: the reader needs its items whole)."""
        if self.dfd < 0 or start % align or self.cached(start, end):
            return -1
        return self.dfd

    def no_direct(self) -> None:
        """Direct reads failed here (a file system that takes the flag but not the reads): buffered from now."""
        if self.dfd >= 0:
            os.close(self.dfd)
            self.dfd = -1

    def close(self) -> None:
        self.no_direct()
        os.close(self.fd)

    def __enter__(self) -> ShardFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_libc = None


def _resident(fd: int, path: str) -> np.ndarray | None:
    """Per page of the file, whether it is in the page cache; None where ``mincore`` cannot say (it
    reports a file's cached pages only to its owner or to who may write it)."""
    global _libc
    if not sys.platform.startswith("linux"):
        return None
    st = os.fstat(fd)
    if st.st_size == 0 or not (os.geteuid() in (0, st.st_uid) or os.access(path, os.W_OK)):
        return None
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        _libc.mmap.restype = ctypes.c_void_p
        _libc.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        _libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    import mmap

    addr = _libc.mmap(None, st.st_size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        return None
    try:
        vec = np.zeros(-(-st.st_size // mmap.PAGESIZE), np.uint8)
        if _libc.mincore(addr, st.st_size, vec.ctypes.data) != 0:
            return None
    finally:
        _libc.munmap(addr, st.st_size)
    cached = (vec & 1).astype(bool)
    if mmap.PAGESIZE != PAGE:  # mincore's pages are the system's (4, 16 or 64 KiB): one flag per PAGE
        cached = cached[np.arange(-(-st.st_size // PAGE)) * PAGE // mmap.PAGESIZE]
    return cached

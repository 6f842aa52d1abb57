"""Read a folder's shards ahead of the pass that counts them, while the model is built and traced.

A shard not in the page cache costs a disk read, and the pass over a 7B model's shards waits on the
disk, not on counting. A thread reads each shard front to back, in the order the pass reads them,
into a scratch buffer, from the moment the folder is opened: the disk streams one file at a time at
its sequential speed while the model is built and traced, and the pass finds the pages in the cache.
(Asking the kernel to read ahead, ``posix_fadvise(WILLNEED)``, returns at once and leaves the disk
seeking between the advised range and the pass: slower than no help.) The thread stays at most
``ahead`` bytes ahead of the pass, so that a model larger than memory does not evict its own first
pages before they are read. A shard whose first 64 MiB come faster than a disk reads is taken to
be in the page cache already and skipped.

Examples
--------
>>> import os, tempfile
>>> d = tempfile.mkdtemp(); p = os.path.join(d, "a.bin"); _ = open(p, "wb").write(b"x" * 100)
>>> with Prefetch([p]) as pf:  # the pass reads the file here, and tells how far it got
...     pf.consumed(100)
>>> pf.done, budget() >= STEP
(100, True)
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["Prefetch", "budget"]

STEP = 64 << 20  # bytes read at a time
PROBE = STEP  # a shard whose first bytes read faster than CACHED bytes/s is in the page cache
CACHED = 2e9


def budget() -> int:
    """How far ahead to read: a quarter of the memory available now, at most 2 GiB (1 GiB when unknown).

    Enough for a few seconds of disk; more only lets memory pressure (or a VM's page reclaim) evict
    pages read ahead before the pass gets to them, and the disk then reads them twice."""
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        return max(STEP, min(2 << 30, kb * 1024 // 4))
    except (OSError, StopIteration, ValueError):
        return 1 << 30


class Prefetch:
    """A thread reading ``paths`` ahead of :meth:`consumed` (a context manager)."""

    def __init__(self, paths: list[str], ahead: int | None = None):
        self.paths, self.ahead = paths, ahead if ahead is not None else budget()
        self.done = self.issued = 0
        self._stop = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True, name="connectome-prefetch")

    def __enter__(self) -> Prefetch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()

    def consumed(self, nbytes: int) -> None:
        """The pass has read ``nbytes`` more: the thread may advise as far again."""
        with self._cond:
            self.done += nbytes
            self._cond.notify_all()

    def _run(self) -> None:
        buf = bytearray(STEP)
        view = memoryview(buf)
        for path in self.paths:
            try:
                self._read(path, view)
            except OSError:
                continue  # a missing or unreadable shard: the pass names it in its own error
            if self._stop:
                return

    def _read(self, path: str, view: memoryview) -> None:
        with open(path, "rb", buffering=0) as f:
            size, start, got = os.fstat(f.fileno()).st_size, time.perf_counter(), 0
            while True:
                with self._cond:
                    while not self._stop and self.issued - self.done > self.ahead:
                        self._cond.wait()
                    if self._stop:
                        return
                n = f.readinto(view)
                if not n:
                    return
                self.issued += n
                got += n
                if got == PROBE and got / max(time.perf_counter() - start, 1e-9) > CACHED:
                    self.issued += size - got  # its first pages came from memory: the shard is cached
                    return

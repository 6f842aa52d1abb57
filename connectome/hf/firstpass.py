"""Count a folder's stored matrices from the moment it is opened, while the model is built and traced.

Reading a 7B model's shards takes seconds, and so do importing its architecture and tracing it. Two
threads count every plain float matrix of the folder, in the order they lie in the shards, each
matrix in one compiled call that reads and counts it without the interpreter lock
(:func:`connectome.hf.pread.count_stored`), while the main thread builds and traces the model: the
disk, the counting and the trace run at once (while one thread counts, the other waits on the disk).
Pages in the page cache are copied out once; pages not in it are read past it
(:mod:`connectome.hf.direct`), which leaves the CPU to the counting and the trace. After
:meth:`FirstPass.hurry` (the trace is done) one thread per core torch uses counts what is left. A
matrix the analysis needs otherwise (GPT-2's transposed Conv1D) is counted again by the caller, and
so is one the pass has not reached when it stops (an error, or the caller leaving early).

Examples
--------
>>> import os, tempfile, torch
>>> from safetensors.torch import save_file
>>> from connectome.hf.folder import Folder
>>> d = tempfile.mkdtemp()
>>> save_file({"w": torch.tensor([[0.0] * 7 + [1.0]], dtype=torch.bfloat16)}, os.path.join(d, "m.safetensors"))
>>> _ = open(os.path.join(d, "config.json"), "w").write("{}")
>>> with FirstPass(Folder.open(d)) as first:
...     first.hurry()
...     s = first.take("w")
>>> s.count, s.cols.tolist()
(1, [False, False, False, False, False, False, False, True])
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from ..io.errors import SpecError
from .bits import BITS, CHUNK, by_words
from .direct import ShardFile
from .folder import Folder
from .kernel import Stats, _threads
from .pread import available, buffer, count_stored

__all__ = ["FirstPass", "MAX_THREADS", "counted_early", "start_early", "adopt"]

MAX_THREADS = 8  # beyond, more buffers and more streams at once, and a disk no faster
START_THREADS = 2  # while the model is traced: one counts while the other waits on the disk
SMALL = 4 << 20  # bytes: tensors the pass leaves to the caller (norm scales, biases) up to this size ...
SMALL_TOTAL = 64 << 20  # ... and up to this much in all are read into the page cache before it starts

_early: FirstPass | None = None  # started by start_early, not yet adopted


def counted_early(folder: Folder) -> list[str]:
    """The stored keys the first pass counts: float matrices read by words, not compressed."""
    if not available():
        return []
    keys = [
        k
        for k, e in folder.entries.items()
        if k not in folder.compressed and len(e.shape) >= 2 and e.dtype in BITS and by_words(e, -1, False)
    ]
    return sorted(keys, key=lambda k: (folder.entries[k].shard, folder.entries[k].start))


class FirstPass:
    """Threads counting :func:`counted_early` of ``folder`` (a context manager); :meth:`take` a result.

    ``done(key)`` is called (from a counting thread) as each matrix is counted.
    """

    def __init__(self, folder: Folder, done: Callable[[str], None] | None = None):
        self.folder, self.done = folder, done
        self.keys = counted_early(folder)
        self._keys = set(self.keys)
        self.results: dict[str, Stats] = {}
        self.error: tuple[str, BaseException] | None = None
        self._next = self._running = 0
        self._stop = False
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> FirstPass:
        if not self._threads:
            self._read_small()
        for _ in range(max(0, min(START_THREADS, _cores()) - len(self._threads))):  # none more once adopted
            self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        for t in self._threads:
            t.join()

    @property
    def finished(self) -> bool:
        """No thread counts any more (all done, stopped, or an error met)."""
        return self._running == 0

    def hurry(self) -> None:
        """The main thread is done with its own work: count with as many threads as torch uses (at most
        ``MAX_THREADS``, each with its own read buffer) from now on."""
        for _ in range(max(0, min(_threads(), MAX_THREADS) - len(self._threads))):
            self._start()

    def watch(self, done: Callable[[str], None]) -> None:
        """Call ``done(key)`` for every matrix counted so far, and from now on as each is counted."""
        with self._cond:
            self.done, counted = done, list(self.results)
        for key in counted:
            done(key)

    def waiting(self, key: str) -> bool:
        """Whether :meth:`take` of ``key`` would wait now (the pass counts it and has not yet)."""
        with self._cond:
            return key in self._keys and key not in self.results and not self.finished and self.error is None

    def take(self, key: str) -> Stats | None:
        """The stats of ``key`` once counted; None when the pass does not count it or stopped before it.
        The error the pass met on ``key`` (a truncated shard) is raised here."""
        if key not in self._keys:
            return None
        with self._cond:
            while key not in self.results and not self.finished and not (self.error and self.error[0] == key):
                self._cond.wait()
            if self.error is not None and self.error[0] == key:
                raise self.error[1]
            return self.results.get(key)

    def _read_small(self) -> None:
        """Read the small tensors the caller reads itself into the page cache, in file order, before the
        pass starts: a few milliseconds on an idle disk. Behind the pass's reads each would wait its
        turn: seconds in all for a 7B model's norm scales, with the caller holding the interpreter lock
        (safetensors reads them from mapped pages), which stalls the counting threads too."""
        skip, total = set(self.keys) | set(self.folder.compressed), 0  # compressed: no bytes of their own
        small = [
            e
            for k, e in {**self.folder.entries, **self.folder.members}.items()
            if k not in skip and 0 < e.nbytes <= SMALL
        ]
        fds: dict[str, int] = {}
        try:
            for e in sorted(small, key=lambda e: (e.shard, e.start)):
                total += e.nbytes
                if total > SMALL_TOTAL:
                    break
                fd = fds.get(e.shard)
                if fd is None:
                    fd = fds[e.shard] = os.open(os.path.join(self.folder.path, e.shard), os.O_RDONLY)
                os.pread(fd, e.nbytes, e.start)
        except OSError:
            pass  # a missing or cut shard: named where its tensors are read
        finally:
            for fd in fds.values():
                os.close(fd)

    def _start(self) -> None:
        with self._cond:
            if self._stop or self.error is not None or self._next >= len(self.keys):
                return
            self._running += 1
        t = threading.Thread(target=self._run, daemon=True, name=f"connectome-count-{len(self._threads)}")
        self._threads.append(t)
        t.start()

    def _run(self) -> None:
        buf, shards = buffer(CHUNK), dict[str, ShardFile]()
        try:
            while not self._stop:
                with self._cond:
                    if self._next >= len(self.keys) or self.error is not None:
                        return
                    key = self.keys[self._next]
                    self._next += 1
                entry = self.folder.entries[key]
                try:
                    shard = shards.get(entry.shard)
                    if shard is None:
                        shard = shards[entry.shard] = ShardFile(os.path.join(self.folder.path, entry.shard))
                    stats = count_stored(self.folder.path, entry, buf, shard)
                except BaseException as e:  # handed to whoever takes this matrix; the pass stops
                    with self._cond:
                        self.error = (key, e)
                        self._cond.notify_all()
                    return
                with self._cond:  # with the callback of the same moment: watch() credits each key once
                    self.results[key] = stats
                    self._cond.notify_all()
                    done = self.done
                if done is not None:
                    done(key)
        finally:
            for shard in shards.values():
                shard.close()
            with self._cond:
                self._running -= 1
                self._cond.notify_all()


def start_early(spec: str, before: Callable[[], Any] | None = None) -> FirstPass | None:
    """Start counting the folder ``spec`` now, for its audit to :func:`adopt` (only a
    :attr:`~connectome.hf.folder.Folder.big` one: a smaller one is read with its masks kept); ``before()``
    runs just before the pass starts. None (and nothing started) where the pass would count nothing here.
    A folder that cannot be opened is left to the audit to name.

    >>> start_early("/nonexistent") is None
    True
    """
    global _early
    try:
        folder = Folder.open(spec)
    except SpecError:
        return None
    if not folder.big or not counted_early(folder):
        return None
    if before is not None:
        before()
    _early = FirstPass(folder).__enter__()
    return _early


def adopt(folder: Folder) -> FirstPass | None:
    """The pass :func:`start_early` started on this same folder (same files, same entries), now the
    caller's to exit; None where there is none. A pass on another folder is stopped."""
    global _early
    first, _early = _early, None
    if first is None:
        return None
    same = os.path.realpath(first.folder.path) == os.path.realpath(folder.path) and first.keys == counted_early(folder)
    if same and all(first.folder.entries[k] == folder.entries[k] for k in first.keys):
        return first
    first.__exit__(None, None, None)
    return None


def _cores() -> int:
    """The cores this process may run on (without importing torch, whose thread count is this by default)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)

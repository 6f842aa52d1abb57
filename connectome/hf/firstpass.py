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

from .bits import BITS, CHUNK, by_words
from .direct import ShardFile
from .folder import Folder
from .kernel import Stats, _threads
from .pread import available, buffer, count_stored

__all__ = ["FirstPass", "MAX_THREADS", "counted_early"]

MAX_THREADS = 8  # beyond, more buffers and more streams at once, and a disk no faster
START_THREADS = 2  # while the model is traced: one counts while the other waits on the disk


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
        self.results: dict[str, Stats] = {}
        self.error: tuple[str, BaseException] | None = None
        self._next = self._running = 0
        self._stop = False
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> FirstPass:
        for _ in range(min(START_THREADS, _threads())):
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

    def take(self, key: str) -> Stats | None:
        """The stats of ``key`` once counted; None when the pass does not count it or stopped before it.
        The error the pass met on ``key`` (a truncated shard) is raised here."""
        if key not in self.keys:
            return None
        with self._cond:
            while key not in self.results and not self.finished and not (self.error and self.error[0] == key):
                self._cond.wait()
            if self.error is not None and self.error[0] == key:
                raise self.error[1]
            return self.results.get(key)

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
                with self._cond:
                    self.results[key] = stats
                    self._cond.notify_all()
                if self.done is not None:
                    self.done(key)
        finally:
            for shard in shards.values():
                shard.close()
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

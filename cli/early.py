"""Start reading a model folder's shards the moment ``connectome audit FOLDER`` starts, before the imports.

Importing torch and the command's modules takes a second or two, in which the disk would sit idle;
a shard not in the page cache then costs that much more. For ``connectome audit FOLDER`` a thread
reads the folder's shards front to back (into a scratch buffer: the pages land in the page cache)
until the audit's own pass starts (:func:`stop`) or ``LIMIT`` bytes are read; the pass then finds
those pages in memory. A shard whose first read comes faster than a disk reads is in the page
cache already, and is skipped. Standard library only: this runs before anything heavy is imported.

Examples
--------
>>> start(["analyze", "/nonexistent"]) is None  # only the audit of a model folder reads early
True
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["start", "stop"]

STEP = 64 << 20  # bytes read at a time
LIMIT = 4 << 30  # at most this much is read ahead of the audit
CACHED = 2e9  # a first read faster than this many bytes/s came from the page cache

_stop = threading.Event()
_thread: threading.Thread | None = None
_folder: str | None = None
done = 0  # bytes read so far


def start(argv: list[str]) -> threading.Thread | None:
    """For ``audit FOLDER ...`` (a folder with ``config.json`` and shards), the reading thread; else None."""
    global _thread, _folder
    if len(argv) < 2 or argv[0] != "audit":
        return None
    folder = next((a for a in argv[1:] if os.path.isfile(os.path.join(a, "config.json"))), None)
    if folder is None:
        return None
    try:
        shards = sorted(n for n in os.listdir(folder) if n.endswith(".safetensors"))
    except OSError:
        return None
    _stop.clear()
    _folder = folder
    _thread = threading.Thread(
        target=_read, args=([os.path.join(folder, n) for n in shards],), daemon=True, name="connectome-early"
    )
    _thread.start()
    return _thread


def count() -> None:
    """For the folder :func:`start` reads, start the audit's counting pass now, and stop this reading
    (where the pass would not count it, or cannot: nothing changes)."""
    if _thread is None or _folder is None:
        return
    try:
        from connectome.hf.firstpass import start_early

        start_early(_folder, before=stop)
    except Exception:
        return


def stop() -> None:
    """The audit reads the shards itself from here on: the thread stops after its current read."""
    _stop.set()
    if _thread is not None:
        _thread.join()


def _read(paths: list[str]) -> None:
    global done
    view = memoryview(bytearray(STEP))
    total = done = 0
    for path in paths:
        try:
            with open(path, "rb", buffering=0) as f:
                first = True
                while not _stop.is_set() and total < LIMIT:
                    t = time.perf_counter()
                    n = f.readinto(view)
                    if not n:
                        break
                    total += n
                    done = total
                    if first and n == STEP and n / max(time.perf_counter() - t, 1e-9) > CACHED:
                        break  # already in the page cache
                    first = False
        except OSError:
            pass  # the audit names a missing or unreadable shard in its own error
        if _stop.is_set() or total >= LIMIT:
            return

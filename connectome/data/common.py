"""What the dataset readers share: the error type, safe opening, bounded reads, label checks, sampling.

A data file is a stranger's input: it is opened only once it is known to be a regular file (a FIFO
in its place would block a plain ``open`` for ever), and read only as far as its header or its size
says, with the memory for it reserved first (:func:`connectome.memory.reserve`).

Examples
--------
>>> import io
>>> read_exactly(io.BytesIO(b"\\x01\\x02"), 2, "f").tolist()
[1, 2]
>>> read_exactly(io.BytesIO(b"\\x01\\x02\\x03"), 2, "f")
Traceback (most recent call last):
...
connectome.data.common.DataError: f holds more data than its header declares: replace it with the original file
>>> open_file("/dev/null")
Traceback (most recent call last):
...
connectome.data.common.DataError: /dev/null is a character device, not a data file: replace it with the dataset's file
"""

from __future__ import annotations

import os
import stat
import zlib
from typing import BinaryIO

import numpy as np
import torch

_CHUNK = 1 << 20  # bytes per read: a gzip stream never inflates more than this at once

_KINDS = {
    stat.S_ISDIR: "a folder",
    stat.S_ISFIFO: "a FIFO (named pipe)",
    stat.S_ISSOCK: "a socket",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
}


class DataError(ValueError):
    """The dataset's files were not found or are damaged; the message says how to provide them."""


def open_file(path: str) -> BinaryIO:
    """``path`` opened for binary reading, once it is known to be a regular file.

    A folder, a FIFO, a device or a file that cannot be read is a :class:`DataError` naming ``path``.
    The file is opened without blocking and checked through the open descriptor, so a FIFO is never
    waited on and nothing can be swapped in between the check and the read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except PermissionError:
        raise DataError(
            f"cannot read {path}: permission denied; make it readable or pass another --data-root"
        ) from None
    except FileNotFoundError:
        raise DataError(f"cannot read {path}: it does not exist (a broken link?); put the file there") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}; replace it with the dataset's file") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((k for test, k in _KINDS.items() if test(mode)), "not a regular file")
        raise DataError(f"{path} is {kind}, not a data file: replace it with the dataset's file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def size_of(f: BinaryIO) -> int:
    """Bytes in the regular file ``f`` (opened by :func:`open_file`)."""
    return os.fstat(f.fileno()).st_size


def read_exactly(f: BinaryIO, nbytes: int, path: str) -> np.ndarray:
    """The next ``nbytes`` bytes of ``f`` as a uint8 array, which must end the file.

    The caller has reserved the memory. Reads go in chunks of at most 1 MB, so that a gzip stream
    that holds more than its header declares costs one chunk, not the whole inflated stream.
    """
    out = np.empty(nbytes, dtype=np.uint8)
    got = 0
    try:
        while got < nbytes:
            chunk = f.read(min(_CHUNK, nbytes - got))
            if not chunk:
                break
            out[got : got + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            got += len(chunk)
        extra = f.read(1)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path} ({_one_line(e)}): replace it with the original file") from None
    if got < nbytes:
        raise DataError(f"{path} is truncated: expected {nbytes} bytes of data, found {got}")
    if extra:
        raise DataError(f"{path} holds more data than its header declares: replace it with the original file")
    return out


def read_upto(f: BinaryIO, nbytes: int, path: str) -> bytes:
    """At most ``nbytes`` (a few) bytes of ``f``; a damaged stream is a :class:`DataError` naming ``path``."""
    try:
        return f.read(nbytes)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path} ({_one_line(e)}): replace it with the original file") from None


def check_labels(labels: np.ndarray, path: str, classes: int = 10) -> None:
    """Raise :class:`DataError` unless every label is a class ``0 .. classes-1``.

    >>> check_labels(np.array([3, 11]), "f")
    Traceback (most recent call last):
    ...
    connectome.data.common.DataError: f: label 11 of example 2 is not a class 0-9: replace the file with the original
    """
    bad = np.flatnonzero((labels < 0) | (labels >= classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{path}: label {int(labels[i])} of example {i + 1} is not a class 0-{classes - 1}: "
            "replace the file with the original"
        )


def pick(images: np.ndarray, labels: np.ndarray, n: int | None, seed: int) -> tuple[np.ndarray, torch.Tensor]:
    """All rows (``n`` None) or ``n`` rows drawn without replacement by ``seed``, kept in file order."""
    if n is not None:
        idx = sample(len(images), n, seed)
        images, labels = images[idx], labels[idx]
    return images.reshape(len(images), -1), torch.from_numpy(np.asarray(labels).astype(np.int64))


def sample(total: int, n: int, seed: int) -> np.ndarray:
    """``min(n, total)`` sorted row numbers below ``total``, drawn without replacement by ``seed``.

    >>> sample(10, 3, seed=0).tolist(), sample(2, 5, seed=0).tolist()
    ([5, 6, 9], [0, 1])
    """
    return np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))


def _one_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__

"""Writing outputs safely: atomically (temp file + rename), never over an input, never over a device.

An input is any file a command reads, named directly or inside a spec (the ``m.py`` of ``m.py:build``),
and is recognised by its file identity, so a symlink or a hard link to it is refused too. An output
that exists and is a character device or a FIFO (``/dev/null``, ``/dev/stdout`` into a pipe) is written
in place, as a sink; renaming a file over it would replace the device. Any other non-regular file is
refused.

>>> import os, tempfile
>>> p = os.path.join(tempfile.mkdtemp(), "r.json")
>>> write_atomic(p, "{}")
>>> open(p).read()
'{}'
>>> write_atomic(os.devnull, "{}")             # a sink: written in place, still a device
>>> import stat; stat.S_ISCHR(os.stat(os.devnull).st_mode)
True
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable

from .errors import SpecError

__all__ = ["write_atomic", "write_chunks", "check_writable", "input_files"]


def input_files(inputs: tuple[str | None, ...]) -> list[str]:
    """The files that ``inputs`` (paths, or specs such as ``m.py:build``) name and that exist.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); open(os.path.join(d, "m.py"), "w").close()
    >>> [os.path.basename(f) for f in input_files((os.path.join(d, "m.py") + ":build", None, "torchvision:x"))]
    ['m.py']
    """
    found = []
    for p in inputs:
        if not p:
            continue
        for candidate in (p, p.rpartition(":")[0]):  # a spec's file is before its last colon
            if candidate and os.path.isfile(candidate):
                found.append(candidate)
                break
    return found


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)  # device and inode: symlinks and hard links are the same file
    except OSError:
        return False


def _sink(real: str) -> bool:
    """Whether ``real`` exists and is a device or pipe to write into in place; refuses other odd files."""
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return True
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise SpecError(f"cannot write {real}: it is neither a regular file, a character device nor a pipe")
    return False


def check_writable(path: str, inputs: tuple[str | None, ...] = ()) -> str:
    """Raise the error :func:`write_atomic` would raise for ``path``, without writing; its real path."""
    if not path:
        raise SpecError("the output path is empty: give a file name with -o")
    real = os.path.realpath(path)
    for p in input_files(inputs):
        if os.path.realpath(p) == real or _same_file(p, path):
            raise SpecError(f"refusing to write over the input file {p}: choose another -o path")
    if _sink(real):
        return real
    folder = os.path.dirname(real) or "."
    if not os.path.isdir(folder):
        raise SpecError(f"cannot write {path}: no such directory {os.path.dirname(path) or '.'}")
    if os.path.isdir(real):
        raise SpecError(f"cannot write {path}: it is a directory")
    return real


def write_atomic(path: str, data: str | bytes, inputs: tuple[str | None, ...] = ()) -> None:
    """Write ``data`` to ``path`` through a temp file in the same directory, then rename it into place.

    Readers never see a half-written file; ``inputs`` are files that must not be overwritten.
    """
    real = check_writable(path, inputs)
    payload = data.encode() if isinstance(data, str) else data
    try:
        if _sink(real):
            with open(real, "wb") as f:
                f.write(payload)
            return
        _replace(real, payload)
    except OSError as e:  # a full disk, a read-only file system: named by the user's path, not a temp file
        raise SpecError(f"cannot write {path}: {e.strerror or e}") from None


def write_chunks(path: str, chunks: Iterable[bytes], inputs: tuple[str | None, ...] = ()) -> None:
    """:func:`write_atomic` for data made piece by piece: only one chunk is in memory at a time.

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "m.bin")
    >>> write_chunks(p, (bytes([i]) * 2 for i in range(3)))
    >>> open(p, "rb").read()
    b'\\x00\\x00\\x01\\x01\\x02\\x02'
    """
    real = check_writable(path, inputs)
    try:
        if _sink(real):
            with open(real, "wb") as f:
                for c in chunks:
                    f.write(c)
            return
        _replace(real, chunks)
    except OSError as e:
        raise SpecError(f"cannot write {path}: {e.strerror or e}") from None


def _replace(real: str, payload: bytes | Iterable[bytes]) -> None:
    folder = os.path.dirname(real) or "."
    fd, tmp = tempfile.mkstemp(prefix=".connectome-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in [payload] if isinstance(payload, bytes) else payload:
                f.write(chunk)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; a report should read like any other
        os.replace(tmp, real)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

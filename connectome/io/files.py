"""Writing outputs safely: atomically (temp file + rename), never over an input.

>>> import os, tempfile
>>> p = os.path.join(tempfile.mkdtemp(), "r.json")
>>> write_atomic(p, "{}")
>>> open(p).read()
'{}'
"""

from __future__ import annotations

import os
import tempfile

from .errors import SpecError

__all__ = ["write_atomic", "check_writable"]


def check_writable(path: str, inputs: tuple[str | None, ...] = ()) -> str:
    """Raise the error :func:`write_atomic` would raise for ``path``, without writing; its real path."""
    real = os.path.realpath(path)
    for p in inputs:
        if p and os.path.exists(p) and os.path.realpath(p) == real:
            raise SpecError(f"refusing to write over the input file {p}: choose another -o path")
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
    folder = os.path.dirname(real) or "."
    fd, tmp = tempfile.mkstemp(prefix=".connectome-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; a report should read like any other
        os.replace(tmp, real)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

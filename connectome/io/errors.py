"""The one error loading raises (what could not be used, and how to fix it), and how its messages show
what a user gave: on one printable line, clipped. Standard library only: the first reads of a model
folder use it before torch is imported.

Examples
--------
>>> str(SpecError("no such file: m.pt"))
'no such file: m.pt'
>>> clip("a key\\nwith a newline", 12)
'a key?wit...'
"""

import os

__all__ = ["SpecError", "clip", "clip_path", "first_line", "CLIP"]

CLIP = 80  # characters of a user's string (a key, a path) shown in a message


class SpecError(ValueError):
    """A model spec, weights file or shape could not be used; the message says how to fix it."""


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def clip(text: object, n: int = CLIP) -> str:
    """``text`` on one printable line of at most ``n`` characters (its head, then ``...``)."""
    s = _printable(str(text))
    return s if len(s) <= n else s[: n - 3] + "..."


def clip_path(path: object, n: int = CLIP) -> str:
    """A path on one printable line of at most ``n`` characters (``...`` then its tail: the file's name)."""
    s = _printable(os.fspath(path) if isinstance(path, os.PathLike) else str(path))
    return s if len(s) <= n else "..." + s[-(n - 3) :]


def first_line(e: BaseException, n: int = 120) -> str:
    text = str(e).strip()
    return clip(text.splitlines()[0], n) if text else type(e).__name__

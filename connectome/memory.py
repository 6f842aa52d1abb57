"""A memory budget for work whose size a stranger's input decides: analyses, file reads, data sets.

The budget defaults to half of the machine's memory (or of the container's limit, when lower) and is
changed for a block of work with :func:`budget` (``--max-memory`` on the command line). Code that is
about to allocate in proportion to its input calls :func:`reserve` first; long loops call
:func:`check`, which compares the growth of the process's resident memory since the block began with
the budget. Either raises :class:`MemoryBudgetError`, a one-line message that names what was too big
and what to do instead.

Examples
--------
>>> parse_size("1.5G"), parse_size("512M"), parse_size("2048")
(1610612736, 536870912, 2048)
>>> with budget(parse_size("1M"), subject="the test"):
...     reserve(2**30, "a table")
Traceback (most recent call last):
...
connectome.memory.MemoryBudgetError: a table for the test needs about 1.0 GB, over the memory budget of 1.0 MB: ...
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = [
    "MemoryBudgetError",
    "budget",
    "reserve",
    "check",
    "limit",
    "parse_size",
    "human",
    "default_budget",
    "set_default",
]

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class MemoryBudgetError(MemoryError):
    """Work would exceed the memory budget; the message names the input size and a way out."""


@dataclass(frozen=True)
class _Block:
    limit: int
    start: int  # resident bytes when the block began: the budget is for growth beyond them
    subject: str  # what the work is about, e.g. "input 1x3x20000x20000"
    hint: str | Callable[[int, int], str]  # what to do instead; called with (need, limit) when callable


_current: ContextVar[_Block | None] = ContextVar("connectome_memory", default=None)


def parse_size(text: str | int) -> int:
    """Bytes from ``"4G"``, ``"512M"``, ``"1.5GB"``, ``"10%"`` (of the machine) or a plain number.

    >>> parse_size("1K"), parse_size(" 2 gb ")
    (1024, 2147483648)
    """
    if isinstance(text, int):
        return text
    s = text.strip().upper().replace(" ", "")
    m = re.fullmatch(r"(\d+(?:\.\d*)?)(%|[KMGT]?I?B?)", s)
    if not m:
        raise ValueError(f"bad memory size {text!r}: use a number with K, M, G or T (e.g. 4G), or a percentage")
    value, unit = float(m.group(1)), m.group(2)
    size = int(machine_bytes() * value / 100) if unit == "%" else int(value * _UNITS[unit.rstrip("B").rstrip("I")])
    if size <= 0:
        raise ValueError(f"bad memory size {text!r}: it must be more than 0 bytes")
    return size


def human(n: float) -> str:
    """``1536 * 2**20`` -> ``'1.5 GB'`` (binary units, as ``parse_size`` reads them back)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


def machine_bytes() -> int:
    """Physical memory, or the container's (cgroup) limit when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError), open(path) as f:
            total = min(total, int(f.read().strip()))
    return total


_override: list[int] = []


def default_budget() -> int:
    """Half of :func:`machine_bytes` (room for the rest of the machine's work), or what
    :func:`set_default` chose."""
    return _override[-1] if _override else machine_bytes() // 2


def set_default(nbytes: int | None) -> None:
    """The budget of every later block that does not give its own (``--max-memory``); None: half the machine."""
    _override.clear()
    if nbytes is not None:
        _override.append(int(nbytes))


def rss() -> int:
    """Resident memory of this process now (its peak where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes, Linux and BSD KiB


@contextlib.contextmanager
def budget(limit: int | None = None, subject: str = "", hint: str | Callable[[int, int], str] = "") -> Iterator[None]:
    """Hold the work in this block to ``limit`` bytes of growth (None: the enclosing or default budget).

    An inner block narrows ``subject`` and ``hint``; its limit is the smaller of the two.
    """
    outer = _current.get()
    if limit is None:
        limit = outer.limit if outer else default_budget()
    elif outer is not None:
        limit = min(limit, outer.limit)
    start = outer.start if outer else rss()
    token = _current.set(
        _Block(limit, start, subject or (outer.subject if outer else ""), hint or (outer.hint if outer else ""))
    )
    try:
        yield
    finally:
        _current.reset(token)


def limit() -> int:
    """The budget in force, in bytes."""
    block = _current.get()
    return block.limit if block else default_budget()


def _fail(need: int, what: str, block: _Block | None, lim: int) -> MemoryBudgetError:
    subject = f" for {block.subject}" if block and block.subject else ""
    hint = block.hint if block and block.hint else "raise --max-memory if the machine has room"
    if callable(hint):
        hint = hint(need, lim)
    return MemoryBudgetError(
        f"{what}{subject} needs about {human(need)}, over the memory budget of {human(lim)}: {hint}"
    )


def reserve(nbytes: int, what: str) -> None:
    """Raise :class:`MemoryBudgetError` unless ``nbytes`` more fit in the budget."""
    block = _current.get()
    lim = block.limit if block else default_budget()
    used = max(rss() - block.start, 0) if block else 0
    if used + nbytes > lim:
        raise _fail(used + nbytes, what, block, lim)


_last_check = [0.0]


def check(what: str = "the analysis", done: float = 1.0) -> None:
    """Raise :class:`MemoryBudgetError` when the block has grown past its budget.

    ``done`` is the share of the work finished (0-1), so that the message can estimate the whole.
    Cheap enough for every step of a loop: memory is read at most every 10 ms.
    """
    block = _current.get()
    now = time.monotonic()
    if block is None or now - _last_check[0] < 0.01:
        return
    _last_check[0] = now
    used = rss() - block.start
    if used > block.limit:
        raise _fail(int(used / min(max(done, 0.05), 1.0)), what, block, block.limit)

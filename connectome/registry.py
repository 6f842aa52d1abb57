"""The one rule every registry here follows: a name is registered once.

Examples
--------
>>> table = {}
>>> register(table, "uniform", len, "quota")
>>> register(table, "uniform", max, "quota")
Traceback (most recent call last):
...
RuntimeError: duplicate quota 'uniform': builtins.max (builtins.len has it)
"""

from __future__ import annotations

from typing import Any


def register(table: dict, key: Any, value: Any, what: str, shown: str | None = None) -> None:
    """Store ``value`` under ``key``; a second entry for one key is a programming error, raised at import."""
    if key in table:
        raise RuntimeError(f"duplicate {what} {shown or repr(key)}: {_where(value)} ({_where(table[key])} has it)")
    table[key] = value


def _where(value: Any) -> str:
    fn = getattr(value, "fn", value)  # a registered record wraps its function
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"

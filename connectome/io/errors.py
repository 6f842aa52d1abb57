"""The one error loading raises: what could not be used, and how to fix it.

Examples
--------
>>> str(SpecError("no such file: m.pt"))
'no such file: m.pt'
"""

__all__ = ["SpecError"]


class SpecError(ValueError):
    """A model spec, weights file or shape could not be used; the message says how to fix it."""

"""A package's public names imported on first use (PEP 562), so that importing the package costs nothing.

``import connectome.hf.firstpass`` runs ``connectome/__init__.py`` and ``connectome/hf/__init__.py``
first; were their names imported there, torch would be too, and the ``connectome`` script could not
start counting a model folder's shards before importing it. Standard library only.

Examples
--------
>>> import types
>>> pkg = types.ModuleType("pkg")
>>> pkg.__getattr__ = names(pkg.__name__, {"dumps": "json"})
>>> import sys; sys.modules["pkg"] = pkg
>>> pkg.dumps([1])
'[1]'
>>> "dumps" in vars(pkg)  # kept: the next use is a plain attribute
True
>>> del sys.modules["pkg"]
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["names"]


def names(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package`` that imports each name of ``where`` from the module
    ``where[name]`` (relative to the package) on first use, and keeps it in the package."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__

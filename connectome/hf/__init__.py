"""Hugging Face model folders (``config.json`` + safetensors shards), read one tensor at a time.

Examples
--------
>>> from connectome.hf import is_model_folder
>>> is_model_folder("/nonexistent")
False
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .analyze import analyze_folder
    from .folder import Folder, is_model_folder, resolve
    from .stream import Loaded, load_folder

# on first use: connectome.hf.firstpass is imported before torch (see connectome/__init__.py)
_WHERE = {
    "Folder": ".folder",
    "Loaded": ".stream",
    "analyze_folder": ".analyze",
    "is_model_folder": ".folder",
    "load_folder": ".stream",
    "resolve": ".folder",
}
__all__ = ["Folder", "Loaded", "analyze_folder", "is_model_folder", "load_folder", "resolve"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value

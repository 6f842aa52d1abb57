"""Hugging Face model folders (``config.json`` + safetensors shards), read one tensor at a time.

Examples
--------
>>> from connectome.hf import is_model_folder
>>> is_model_folder("/nonexistent")
False
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import names as _names

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

__getattr__ = _names(__name__, _WHERE)

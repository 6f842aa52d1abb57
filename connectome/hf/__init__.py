"""Hugging Face model folders (``config.json`` + safetensors shards), read one tensor at a time.

Examples
--------
>>> from connectome.hf import is_model_folder
>>> is_model_folder("/nonexistent")
False
"""

from .analyze import analyze_folder
from .folder import Folder, is_model_folder, resolve
from .stream import Loaded, load_folder

__all__ = ["Folder", "Loaded", "analyze_folder", "is_model_folder", "load_folder", "resolve"]

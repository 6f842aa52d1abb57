"""Hugging Face model folders (``config.json`` + safetensors shards), read one tensor at a time.

Examples
--------
>>> from connectome.hf import is_model_folder
>>> is_model_folder("/nonexistent")
False
"""

from .folder import Folder, is_model_folder, resolve
from .stream import Loaded, analyze_folder, load_folder

__all__ = ["Folder", "Loaded", "analyze_folder", "is_model_folder", "load_folder", "resolve"]

"""A model folder's tensors read by key, and a matrix's mask read again when the analysis asks for it.

Stored tensors are read through safetensors (compressed ones decoded here, one at a time). The masks
of stored float matrices are read straight from their bits by several threads at once
(:func:`~connectome.hf.pread.read_masks`), when asked (:meth:`Reader.read_ahead`) or, while the shards
are still being read, in the background (:meth:`Reader.read_early`).

Examples
--------
>>> import os, tempfile, torch
>>> from safetensors.torch import save_file
>>> from connectome.hf.folder import Folder
>>> from connectome.hf.keys import Recipe
>>> d = tempfile.mkdtemp(); _ = open(os.path.join(d, "config.json"), "w").write("{}")
>>> save_file({"w": torch.tensor([[0.0, 2.0], [0.0, 0.0]])}, os.path.join(d, "model.safetensors"))
>>> r = Reader(Folder.open(d), {"w": Recipe(("w",))})
>>> r.mask("w").tolist()
[[False, True], [False, False]]
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import numpy as np
import torch

from ..io.errors import SpecError, clip, first_line
from .bits import BITS, stored_stats
from .decode import nonzero_bits
from .folder import Entry, Folder
from .kernel import _threads
from .keys import Recipe, build
from .pread import available, read_masks
from .sparse import decode

__all__ = ["Reader", "MASK_READERS"]

MASK_READERS = 4  # masks read again at once: a disk serves several reads in flight faster than one


class Reader:
    """Reads stored tensors by key (decoding compressed ones), and a parameter's mask by its recipe."""

    def __init__(self, folder: Folder, recipes: dict[str, Recipe], bar: Any = None):
        self.folder, self.recipes, self.bar = folder, recipes, bar
        self.handles: dict[str, Any] = {}
        self.ahead: dict[str, np.ndarray] = {}  # stored key -> mask, read by read_ahead
        self._early: threading.Thread | None = None

    def tensor(self, key: str) -> torch.Tensor:
        members = self.folder.compressed.get(key)
        if members is not None:  # decoded here: one dense tensor at a time
            t = decode(
                self.folder.entries[key].shape, self._raw(members["bitmask"]), self._raw(members["compressed"]), key
            )
            if self.bar is not None:
                self.bar.update(len(members) - 1)
            return t
        return self._raw(key)

    def _raw(self, key: str) -> torch.Tensor:
        entry = self.folder.entries.get(key) or self.folder.members[key]
        handle = self.handles.get(entry.shard)
        if handle is None:
            from safetensors import safe_open

            handle = self.handles[entry.shard] = safe_open(f"{self.folder.path}/{entry.shard}", framework="pt")
        try:
            t = handle.get_tensor(key)
        except Exception as e:
            raise SpecError(f"cannot read {clip(key)} from shard {clip(entry.shard)}: {first_line(e, 80)}") from None
        if self.bar is not None:
            self.bar.update(1)
        return t

    def mask(self, name: str) -> torch.Tensor:
        """The nonzero mask of parameter ``name``, read again (the analysis asks for the few it needs)."""
        try:
            return build(self.recipes[name], self._mask)
        finally:
            self.handles.clear()

    def read_ahead(self, names: list[str]) -> None:
        """Read the masks of the stored float matrices behind parameters ``names`` at once, several
        threads reading (:func:`~connectome.hf.pread.read_masks`); :meth:`mask` then takes them. Those
        :meth:`read_early` read are not read again."""
        self.wait()
        if not available():
            return
        entries = {k: e for k, e in self._entries(names).items() if k not in self.ahead}
        if entries:
            self._read(entries)

    def read_early(self, names: list[str]) -> None:
        """:meth:`read_ahead` in a thread of its own (the caller goes on: the shards are still being read);
        the next :meth:`read_ahead` or :meth:`wait` waits for it. What it fails on is read again then,
        and the error raised there."""

        def run() -> None:
            with contextlib.suppress(Exception):
                self._read(entries)

        self.wait()
        entries = self._entries(names) if available() else {}
        if entries:
            self._early = threading.Thread(target=run, daemon=True, name="connectome-masks-early")
            self._early.start()

    def wait(self) -> None:
        """Wait for :meth:`read_early` to be done."""
        if self._early is not None:
            self._early.join()
            self._early = None

    def _read(self, entries: dict[str, Entry]) -> None:
        self.ahead.update(read_masks(self.folder.path, entries, max(_threads(), MASK_READERS)))

    def _entries(self, names: list[str]) -> dict[str, Entry]:
        entries = {}
        for name in names:
            for key in self.recipes[name].keys:
                entry = self.folder.entries.get(key)
                if key not in self.folder.compressed and entry is not None and _plain_float(entry):
                    entries[key] = entry
        return entries

    def _mask(self, key: str) -> torch.Tensor:
        entry = self.folder.entries.get(key)
        ahead = self.ahead.get(key)
        if ahead is not None:
            if self.bar is not None:
                self.bar.update(1)
            return torch.from_numpy(ahead)
        if key in self.folder.compressed or entry is None or len(entry.shape) < 2 or entry.dtype not in BITS:
            return nonzero_bits(self.tensor(key))
        # a stored float matrix: its mask straight from its mapped bits, one compiled pass, one array
        mask = stored_stats(self.folder, entry, keep=True).mask
        if self.bar is not None:
            self.bar.update(1)
        return torch.from_numpy(mask).reshape(entry.shape)

    def close(self) -> None:
        self.handles.clear()
        self.bar = None


def _plain_float(entry: Any) -> bool:
    return len(entry.shape) >= 2 and entry.dtype in BITS and BITS[entry.dtype][2] != 0 and entry.numel > 0

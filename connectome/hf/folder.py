"""A Hugging Face model folder: its config, its shards and where each tensor lives, checked before use.

A folder holds ``config.json`` and either one ``*.safetensors`` file or several with a
``model.safetensors.index.json`` naming the shard of every tensor. Every shard's header is read (a few
kilobytes each) and checked against its file size, so a truncated or missing shard is one line before
any work starts. A hub id (``org/name``) is accepted only when it resolves in the local Hugging Face
cache: nothing is downloaded.

Examples
--------
>>> import json, os, tempfile, torch
>>> from safetensors.torch import save_file
>>> d = tempfile.mkdtemp()
>>> save_file({"w": torch.zeros(2, 3)}, os.path.join(d, "model.safetensors"))
>>> json.dump({"model_type": "llama"}, open(os.path.join(d, "config.json"), "w"))
>>> f = Folder.open(d)
>>> f.entries["w"].shape, f.entries["w"].dtype
((2, 3), 'F32')
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field

from ..io.errors import SpecError, clip, clip_path, first_line
from .sparse import group_keys

__all__ = ["Entry", "Folder", "is_model_folder", "resolve", "LAZY_LIMIT"]

INDEX = "model.safetensors.index.json"
LAZY_LIMIT = 50_000_000  # weights in matrices: beyond, an audit keeps no mask (a byte each, twice: masks and effective)
MAX_HEADER = 100 << 20  # safetensors' own limit on a header
DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
    "F8_E8M0": 1,
    "F4": 1,
}


@dataclass(frozen=True)
class Entry:
    """One stored tensor: its shard file, safetensors dtype code and shape."""

    shard: str
    dtype: str
    shape: tuple[int, ...]
    start: int = 0  # where its bytes begin in the shard file (0 for a decoded, compressed weight)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        """Its stored size in bytes (a compressed weight's entry: its values' size, were they dense)."""
        return self.numel * DTYPE_BYTES.get(self.dtype, 1)


def is_model_folder(path: str) -> bool:
    """Whether ``path`` is a directory with a ``config.json`` (a Hugging Face model folder).

    >>> is_model_folder("/nonexistent")
    False
    """
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))


def _hub_cache() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return os.path.join(home, "hub")


def resolve(spec: str) -> str:
    """A model folder from a path, or from a hub id found in the local Hugging Face cache.

    >>> resolve("someone/not-cached-model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    connectome.io.errors.SpecError: someone/not-cached-model is not a model folder here nor in the local ...
    """
    if os.path.isdir(spec):
        if not os.path.isfile(os.path.join(spec, "config.json")):
            raise SpecError(f"{clip_path(spec)} has no config.json: give a Hugging Face model folder")
        return spec
    parts = spec.split("/")
    if len(parts) == 2 and all(parts) and not os.path.exists(spec):
        snaps = os.path.join(_hub_cache(), "models--" + "--".join(parts), "snapshots")
        if os.path.isdir(snaps):
            found = sorted(
                (os.path.join(snaps, s) for s in os.listdir(snaps)), key=lambda p: os.path.getmtime(p), reverse=True
            )
            for snap in found:
                if os.path.isfile(os.path.join(snap, "config.json")):
                    return snap
        raise SpecError(
            f"{clip(spec)} is not a model folder here nor in the local Hugging Face cache: download it first "
            f"(huggingface-cli download {clip(spec)}) or give its folder"
        )
    raise SpecError(f"no such model folder: {clip_path(spec)}")


def _header(path: str) -> tuple[dict, int, int]:
    """A safetensors file's header and the size its data should have, checked against the file."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise SpecError(f"shard {clip_path(path)} is truncated (shorter than a safetensors header)")
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_HEADER, size - 8):
                raise SpecError(f"shard {clip_path(path)} is truncated or not a safetensors file: download it again")
            header = json.loads(f.read(n))
    except OSError as e:
        raise SpecError(f"cannot read shard {clip_path(path)}: {first_line(e)}") from None
    except (ValueError, UnicodeDecodeError):
        raise SpecError(f"shard {clip_path(path)} has a corrupt header: download it again") from None
    if not isinstance(header, dict):
        raise SpecError(f"shard {clip_path(path)} has a corrupt header: download it again")
    end = 0
    for key, v in header.items():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(v["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise SpecError(f"shard {clip_path(path)} has a corrupt entry for {clip(key)}: download it again") from None
    if 8 + n + end > size:
        raise SpecError(
            f"shard {clip_path(path)} is truncated ({size:,} bytes, its header needs {8 + n + end:,}): "
            "download it again"
        )
    return header, size, 8 + n


@dataclass
class Folder:
    """A checked model folder: ``config`` (the parsed config.json), ``entries`` (tensor name -> Entry)."""

    path: str
    config: dict
    entries: dict[str, Entry]
    shards: list[str]
    metadata: dict[str, dict]  # per shard: its ``__metadata__``
    nbytes: int  # the shards' total size
    compressed: dict[str, dict[str, str]] = field(default_factory=dict)  # weight -> its compressed members
    members: dict[str, Entry] = field(default_factory=dict)  # the members' own entries

    @property
    def big(self) -> bool:
        """Whether its matrices hold more than ``LAZY_LIMIT`` weights: its audit then keeps no mask in
        memory (:mod:`connectome.hf.proxy`), and starts counting it at once (:mod:`connectome.hf.firstpass`)."""
        return sum(e.numel for e in self.entries.values() if len(e.shape) >= 2) > LAZY_LIMIT

    @staticmethod
    def open(spec: str) -> Folder:
        path = resolve(spec)
        try:
            with open(os.path.join(path, "config.json")) as f:
                config = json.load(f)
        except (OSError, ValueError) as e:
            raise SpecError(f"cannot read {clip_path(os.path.join(path, 'config.json'))}: {first_line(e)}") from None
        if not isinstance(config, dict):
            raise SpecError(f"{clip_path(os.path.join(path, 'config.json'))} is not a JSON object")
        shards = _shard_files(path)
        entries: dict[str, Entry] = {}
        metadata, total = {}, 0
        for shard in shards:
            header, size, base = _header(os.path.join(path, shard))
            total += size
            metadata[shard] = header.pop("__metadata__", None) or {}
            for key, v in header.items():
                try:
                    shape = tuple(int(d) for d in v["shape"])
                    entries[key] = Entry(shard, str(v["dtype"]), shape, base + int(v["data_offsets"][0]))
                except (KeyError, TypeError, ValueError):
                    raise SpecError(f"shard {clip(shard)} has a corrupt entry for {clip(key)}") from None
        compressed = group_keys(list(entries))
        folded: dict[str, Entry] = {}
        for name, members in compressed.items():
            values = entries[members["compressed"]]
            shape = _small_tensor(path, entries[members["shape"]].shard, members["shape"])
            for key in members.values():
                folded[key] = entries.pop(key)
            entries[name] = Entry(values.shard, values.dtype, shape)
        return Folder(path, config, entries, shards, metadata, total, compressed, folded)


def _small_tensor(path: str, shard: str, key: str) -> tuple[int, ...]:
    """A compressed weight's stored shape (a tensor of a few integers)."""
    from safetensors import safe_open

    try:
        with safe_open(os.path.join(path, shard), framework="pt") as f:
            t = f.get_tensor(key)
        return tuple(int(d) for d in t.reshape(-1).tolist())
    except Exception as e:
        raise SpecError(f"cannot read {clip(key)} from shard {clip(shard)}: {first_line(e, 80)}") from None


def _shard_files(path: str) -> list[str]:
    index = os.path.join(path, INDEX)
    if os.path.isfile(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise SpecError(f"cannot read {clip_path(index)}: {first_line(e)}") from None
        missing = [n for n in names if not os.path.isfile(os.path.join(path, n))]
        if missing:
            raise SpecError(
                f"shard {clip(missing[0])} named in {INDEX} is missing from {clip_path(path)}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + ": download the whole model again"
            )
        return names
    names = sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))
    if not names:
        kinds = sorted({n.rpartition(".")[2] for n in os.listdir(path) if n.endswith((".bin", ".gguf", ".pt", ".pth"))})
        hint = f" (it has .{', .'.join(kinds)} files: save it with safetensors)" if kinds else ""
        raise SpecError(f"{clip_path(path)} has no .safetensors file{hint}")
    return names

"""Read a model folder one tensor at a time: what the analysis needs of the matrices, values of the vectors.

Each matrix is read once from its shard's mapped pages (:mod:`connectome.hf.bits`) and reduced to a
:class:`Summary` (its count, which rows and columns keep any) and N:M counts, its mask kept only when
asked; vectors (norm scales and biases, whose zeros the walk uses) are read for real. The model is
built from the config with placeholders for its matrices (:mod:`connectome.hf.skeleton`).

Examples
--------
>>> import tempfile, torch, transformers
>>> cfg = transformers.Qwen2Config(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
...                                num_attention_heads=4, num_key_value_heads=2)
>>> model = transformers.Qwen2ForCausalLM(cfg)
>>> with torch.no_grad(): _ = model.model.layers[0].mlp.up_proj.weight[:5].zero_()
>>> d = tempfile.mkdtemp(); model.save_pretrained(d)
>>> loaded = load_folder(d, progress=False, keep_masks=False)
>>> loaded.masks, loaded.summaries["model.layers.0.mlp.up_proj.weight"].count, loaded.nm["lm_head.weight"].hist[4]
({}, 304, [0, 0, 0, 0, 160])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..io.errors import SpecError
from ..io.tensors import clip, first_line
from .bits import BITS, stored_stats
from .decode import check_dtype, nonfinite_bits, nonzero_bits, storage_format
from .folder import Folder
from .keys import Recipe, build, plan
from .nm import NMCount, nm_count
from .skeleton import build_model, materialize, placeholder
from .sparse import decode

__all__ = ["Loaded", "Reader", "Summary", "load_folder"]


@dataclass
class Summary:
    """What one read leaves of a matrix: its shape, kept count and which rows and columns keep any.

    ``cols`` is over the matrix's flattened trailing dimensions, as :class:`~connectome.io.masks.Reduced`.
    """

    shape: tuple[int, ...]
    count: int
    rows: np.ndarray
    cols: np.ndarray


@dataclass
class Loaded:
    """A read folder: the skeleton ``model``, per matrix its :class:`Summary` and N:M counts (and, when
    kept, its ``masks``), and a :class:`Reader` to read any matrix's mask again."""

    folder: Folder
    model: nn.Module
    masks: dict[str, torch.Tensor]
    nm: dict[str, NMCount]
    recipes: dict[str, Recipe]
    reader: Reader
    summaries: dict[str, Summary] = field(default_factory=dict)
    stored_as: dict[str, str] = field(default_factory=dict)  # analysis key -> the parameter name stored
    nonfinite: dict[str, int] = field(default_factory=dict)  # stored key -> NaN/Inf entries
    stored: int = 0  # entries of every tensor read (matrices and vectors)
    stored_zero: int = 0
    notes: list[str] = field(default_factory=list)
    exact: dict[str, torch.Tensor] | None = None  # after a lazy analysis: the masks it read exactly

    def mask(self, key: str) -> torch.Tensor:
        """The mask of the matrix under analysis key ``key``: kept, or read again from the shards."""
        if key in self.masks:
            return self.masks[key]
        return self.reader.mask(self.stored_as.get(key, key))


class Reader:
    """Reads stored tensors by key (decoding compressed ones), and a parameter's mask by its recipe."""

    def __init__(self, folder: Folder, recipes: dict[str, Recipe], bar: Any = None):
        self.folder, self.recipes, self.bar = folder, recipes, bar
        self.handles: dict[str, Any] = {}

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
            return build(self.recipes[name], lambda k: nonzero_bits(self.tensor(k)))
        finally:
            self.handles.clear()

    def close(self) -> None:
        self.handles.clear()
        self.bar = None


def load_folder(spec: str, progress: bool | None = None, keep_masks: bool = True) -> Loaded:
    """Check ``spec`` (a folder or a cached hub id), build its skeleton and read every tensor once.

    With ``keep_masks=False`` each matrix's mask is reduced to a :class:`Summary` and dropped: memory
    then grows with the largest tensor, not with the model.
    """
    folder = Folder.open(spec)
    model = build_model(folder.config)
    recipes = plan(model, folder.entries)
    storage_format(folder.config)
    for r in recipes.values():
        for key in r.keys:
            check_dtype(key, folder.entries[key].dtype)
    bar = _bar(sum(len(folder.compressed.get(k, "x")) for r in recipes.values() for k in r.keys), progress)
    reader = Reader(folder, recipes, bar)
    loaded = Loaded(folder, model, {}, {}, recipes, reader)
    axes = _input_axes(model)

    def mask_of(key: str) -> torch.Tensor:
        t = reader.tensor(key)
        bad = nonfinite_bits(t)  # a vector's are found in the model's state (it is read for real)
        if bad:
            loaded.nonfinite[key] = bad
        return nonzero_bits(t)

    def value(name: str, key: str, param: nn.Parameter) -> torch.Tensor:
        r = recipes[name]
        if param.dim() < 2:
            t = build(r, reader.tensor)
            _check_shape(name, t, param)
            loaded.stored += t.numel()
            loaded.stored_zero += t.numel() - int(nonzero_bits(t).sum())
            return t
        key0 = r.keys[0]
        entry = folder.entries[key0]
        if not r.ops and key0 not in folder.compressed and entry.dtype in BITS:  # from the mapped pages
            _check_shape(name, torch.empty(entry.shape, device="meta"), param)
            st = stored_stats(folder, entry, axes.get(key, -1), keep_masks)
            if st.nonfinite:
                loaded.nonfinite[key0] = st.nonfinite
            bar.update(1)
            mask: torch.Tensor | None = torch.from_numpy(st.mask) if st.mask is not None else None
            shape, count = entry.shape, st.count
            rows = st.rows if len(shape) == 2 else np.asarray(st.rows.reshape(shape[0], -1).any(1))
            loaded.nm[key] = NMCount({4: st.hist4, 8: st.hist8}, 0 if axes.get(key, -1) == 0 else len(shape) - 1)
            loaded.summaries[key] = Summary(shape, count, rows, st.cols)
        else:
            mask = build(r, mask_of)
            _check_shape(name, mask, param)
            flat = mask.reshape(mask.shape[0], -1).numpy()
            shape, count = tuple(mask.shape), int(np.count_nonzero(flat))
            loaded.summaries[key] = Summary(
                shape, count, np.logical_or.reduce(flat, axis=1), np.logical_or.reduce(flat, axis=0)
            )
            loaded.nm[key] = nm_count(mask, axes.get(key, -1))
        numel = int(np.prod(shape))
        loaded.stored += numel
        loaded.stored_zero += numel - count
        loaded.stored_as[key] = name
        if keep_masks and mask is not None:
            loaded.masks[key] = mask
        return placeholder(tuple(param.shape), param.dtype)

    # tied parameters once, under their first name (the analysis's key); shard by shard, so that each
    # file is read front to back
    groups: dict[int, list[str]] = {}
    params: dict[int, nn.Parameter] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
        params[id(param)] = param
    jobs = []
    for pid, names in groups.items():
        stored = next((n for n in names if n in recipes), None)
        if stored is not None:
            jobs.append((folder.entries[recipes[stored].keys[0]].shard, stored, names[0], pid))
    values: dict[str, torch.Tensor] = {}
    try:
        for _, stored, key, pid in sorted(jobs):
            t = value(stored, key, params[pid])
            for n in groups[pid]:
                values[n] = t
    finally:
        bar.close()
        reader.close()
    materialize(model, lambda name, param: values.get(name))
    return loaded


def _input_axes(model: nn.Module) -> dict[str, int]:
    """GPT-2's Conv1D stores its matrix as (in, out): its input dimension is the first."""
    return {
        f"{mod_name}.weight".lstrip("."): 0
        for mod_name, mod in model.named_modules()
        if type(mod).__name__ == "Conv1D" and getattr(mod, "weight", None) is not None
    }


def _check_shape(name: str, t: torch.Tensor, param: nn.Parameter) -> None:
    if tuple(t.shape) != tuple(param.shape):
        raise SpecError(
            f"{clip(name)} is stored with shape {tuple(t.shape)} but the config makes it {tuple(param.shape)}: "
            "config.json and the shards do not match"
        )


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, progress: bool | None) -> Any:
    if progress is False:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, unit="tensor", desc="reading", disable=None, leave=False)

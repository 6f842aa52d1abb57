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

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..io.errors import SpecError
from ..io.tensors import clip
from .bits import BITS, stored_stats
from .decode import check_dtype, nonfinite_bits, nonzero_bits, storage_format
from .firstpass import FirstPass, adopt
from .folder import DTYPE_BYTES, Folder
from .keys import Recipe, build, plan
from .nm import NMCount, nm_count
from .prefetch import Prefetch
from .reader import Reader
from .skeleton import build_model, materialize, placeholder

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

    @staticmethod
    def whole(shape: tuple[int, ...]) -> Summary:
        """A stand-in for a matrix not counted yet: every weight kept."""
        n = int(np.prod(shape))
        return Summary(tuple(shape), n, np.ones(shape[0], bool), np.ones(n // max(shape[0], 1), bool))


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
    walked: Any = None  # a walk done while the shards were read (connectome.hf.proxy.walk_ahead)
    stored: int = 0  # entries of every tensor read (matrices and vectors)
    stored_zero: int = 0
    notes: list[str] = field(default_factory=list)
    exact: dict[str, torch.Tensor] | None = None  # after a lazy analysis: the masks it read exactly
    made: Any = None  # what load_folder's ``during`` returned

    def mask(self, key: str) -> torch.Tensor:
        """The mask of the matrix under analysis key ``key``: kept, or read again from the shards."""
        if key in self.masks:
            return self.masks[key]
        return self.reader.mask(self.stored_as.get(key, key))

    def masks_of(self, keys: list[str]) -> dict[str, torch.Tensor]:
        """:meth:`mask` of each of ``keys``, the stored float matrices among them read by several threads."""
        names = {k: self.stored_as.get(k, k) for k in keys if k not in self.masks}
        self.reader.read_ahead([names[k] for k in names])
        try:
            return {k: self.mask(k) for k in keys}
        finally:
            self.reader.ahead.clear()


def load_folder(
    spec: str,
    progress: bool | None = None,
    keep_masks: bool = True,
    during: Callable[[nn.Module], Any] | None = None,
    meanwhile: Callable[[Loaded, Callable], Any] | None = None,
) -> Loaded:
    """Check ``spec`` (a folder or a cached hub id), build its skeleton and read every tensor once.

    With ``keep_masks=False`` each matrix's mask is reduced to a :class:`Summary` and dropped: memory
    then grows with the largest tensor, not with the model. ``during(model)`` runs before the matrices
    are read, while a thread reads the shards ahead (:mod:`connectome.hf.prefetch`), or, when masks are
    not kept, counts them (:mod:`connectome.hf.firstpass`); what it returns is ``Loaded.made``. When
    masks are not kept, ``meanwhile(loaded, peek)`` runs once, after ``during``, as soon as a matrix is
    still being counted: ``peek(key)`` gives ``(summary, counted)`` of a matrix not in
    ``loaded.summaries`` yet, its summary if counted, else a stand-in (wholly kept).
    """
    folder = Folder.open(spec)
    bar = _bar(progress)
    first = adopt(folder)  # the pass the script started on it, if any
    try:
        if keep_masks:  # the disk reads the shards while the model is built and traced
            if first is not None:  # (not for a folder whose masks are kept: it reads them otherwise)
                first.__exit__(None, None, None)
            with Prefetch([os.path.join(folder.path, s) for s in sorted(folder.shards)]) as ahead:
                return _load(folder, bar, keep_masks, during, ahead, None, None)
        first = first or FirstPass(folder)  # counts them meanwhile
        with first:
            first.watch(lambda key: bar.update(1))
            return _load(folder, bar, keep_masks, during, None, first, meanwhile)
    finally:
        bar.close()


def _load(
    folder: Folder,
    bar: Any,
    keep_masks: bool,
    during: Callable | None,
    ahead: Prefetch | None,
    first: FirstPass | None,
    meanwhile: Callable | None,
) -> Loaded:
    model = build_model(folder.config)
    recipes = plan(model, folder.entries)
    storage_format(folder.config)
    for r in recipes.values():
        for key in r.keys:
            check_dtype(key, folder.entries[key].dtype)
    bar.total(sum(len(folder.compressed.get(k, "x")) for r in recipes.values() for k in r.keys))
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
            _check_shape(name, t.shape, param)
            loaded.stored += t.numel()
            loaded.stored_zero += t.numel() - int(nonzero_bits(t).sum())
            return t
        mask = build(r, mask_of)
        _check_shape(name, mask.shape, param)
        flat = mask.reshape(mask.shape[0], -1).numpy()
        count = int(np.count_nonzero(flat))
        summary = Summary(
            tuple(mask.shape), count, np.logical_or.reduce(flat, axis=1), np.logical_or.reduce(flat, axis=0)
        )
        _add(loaded, key, name, summary, nm_count(mask, axes.get(key, -1)), mask if keep_masks else None)
        return placeholder(tuple(param.shape), param.dtype)

    # tied parameters once, under their first name (the analysis's key)
    groups: dict[int, list[str]] = {}
    params: dict[int, nn.Parameter] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
        params[id(param)] = param
    jobs = []
    for pid, names in groups.items():
        stored = next((n for n in names if n in recipes), None)
        if stored is not None:
            key0 = recipes[stored].keys[0]
            jobs.append((folder.entries[key0].shard, folder.entries[key0].start, stored, names[0], pid))
    # vectors (read for real) and matrices decoded or assembled from several keys first; plain stored
    # matrices after the trace, by their bits (stored_stats)
    mapped = []
    values: dict[str, torch.Tensor] = {}
    try:
        for _, _, stored, key, pid in sorted(jobs):
            r, param = recipes[stored], params[pid]
            key0 = r.keys[0]
            entry = folder.entries[key0]
            if param.dim() >= 2 and not r.ops and key0 not in folder.compressed and entry.dtype in BITS:
                _check_shape(stored, entry.shape, param)
                mapped.append((stored, key, entry, axes.get(key, -1)))
                t: torch.Tensor = placeholder(tuple(param.shape), param.dtype)
            else:
                t = value(stored, key, param)
            for n in groups[pid]:
                values[n] = t
        materialize(model, lambda name, param: values.get(name))
        if during is not None:  # the trace needs the model, not its matrices: the disk reads ahead meanwhile
            loaded.made = during(model)
        if first is not None:
            first.hurry()
        coming = {key: (recipes[stored].keys[0], entry, axis) for stored, key, entry, axis in mapped}

        def peek(key: str) -> tuple[Summary, bool] | None:
            c = coming.get(key)
            if c is None or key in loaded.summaries:
                return None
            st = first.results.get(c[0]) if first is not None and c[2] == -1 else None
            if st is None:  # not counted yet
                return Summary.whole(c[1].shape), False
            return _summary(c[1].shape, st), True

        for stored, key, entry, axis in mapped:
            key0 = recipes[stored].keys[0]
            if meanwhile is not None and first is not None and first.waiting(key0):
                meanwhile(loaded, peek)  # while the rest is counted
                meanwhile = None
            st = first.take(key0) if first is not None and axis == -1 else None
            if st is None:
                st = stored_stats(folder, entry, axis, keep_masks)
                if first is None or key0 not in first.results:  # else the pass has counted it on the bar
                    bar.update(1)
            if ahead is not None:
                ahead.consumed(entry.numel * DTYPE_BYTES[entry.dtype])
            if st.nonfinite:
                loaded.nonfinite[key0] = st.nonfinite
            nm = NMCount({4: st.hist4, 8: st.hist8}, 0 if axis == 0 else len(entry.shape) - 1)
            mask = torch.from_numpy(st.mask) if st.mask is not None else None
            _add(loaded, key, stored, _summary(entry.shape, st), nm, mask)
    finally:
        reader.close()
    return loaded


def _summary(shape: tuple[int, ...], st: Any) -> Summary:
    rows = st.rows if len(shape) == 2 else np.asarray(st.rows.reshape(shape[0], -1).any(1))
    return Summary(shape, st.count, rows, st.cols)


def _add(loaded: Loaded, key: str, stored: str, s: Summary, nm: NMCount, mask: torch.Tensor | None) -> None:
    numel = int(np.prod(s.shape))
    loaded.stored += numel
    loaded.stored_zero += numel - s.count
    loaded.stored_as[key] = stored
    loaded.summaries[key] = s
    loaded.nm[key] = nm
    if mask is not None:
        loaded.masks[key] = mask


def _input_axes(model: nn.Module) -> dict[str, int]:
    """GPT-2's Conv1D stores its matrix as (in, out): its input dimension is the first."""
    return {
        f"{mod_name}.weight".lstrip("."): 0
        for mod_name, mod in model.named_modules()
        if type(mod).__name__ == "Conv1D" and getattr(mod, "weight", None) is not None
    }


def _check_shape(name: str, shape: Any, param: nn.Parameter) -> None:
    if tuple(shape) != tuple(param.shape):
        raise SpecError(
            f"{clip(name)} is stored with shape {tuple(shape)} but the config makes it {tuple(param.shape)}: "
            "config.json and the shards do not match"
        )


class _Bar:
    """A tqdm bar over the tensors read (or nothing), updated from the first pass's thread too."""

    def __init__(self, bar: Any = None):
        self.bar, self.lock = bar, threading.Lock()

    def total(self, n: int) -> None:
        if self.bar is not None:
            with self.lock:
                self.bar.total = n
                self.bar.refresh()

    def update(self, n: int) -> None:
        if self.bar is not None:
            with self.lock:
                self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            with self.lock:
                self.bar.close()


def _bar(progress: bool | None) -> _Bar:
    if progress is False:
        return _Bar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _Bar()
    return _Bar(tqdm(unit="tensor", desc="reading", disable=None, leave=False))

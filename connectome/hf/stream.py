"""Read a model folder one tensor at a time: masks and N:M counts of the matrices, values of the vectors.

Each stored tensor is read from its shard (safetensors' lazy ``safe_open``), turned into what the
analysis needs, and dropped: a bool mask for a matrix, the tensor itself for a vector (norm scales
and biases, whose zeros the walk uses). The model is built from the config with placeholders for
its matrices (:mod:`connectome.hf.skeleton`) and analysed with the masks.

Examples
--------
>>> import os, tempfile, torch, transformers
>>> cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
...                                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16)
>>> d = tempfile.mkdtemp(); transformers.LlamaForCausalLM(cfg).save_pretrained(d)
>>> res, loaded = analyze_folder(d, progress=False)
>>> res.params_total == sum(m.numel() for m in loaded.masks.values()), res.collapsed
(True, False)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..io.errors import SpecError
from ..io.tensors import clip, first_line
from .decode import check_dtype, nonfinite_bits, nonzero_bits, storage_format
from .folder import Folder
from .keys import Recipe, build, plan
from .nm import NMCount, nm_count
from .skeleton import build_model, materialize, placeholder
from .sparse import decode

__all__ = ["Loaded", "load_folder", "analyze_folder"]


@dataclass
class Loaded:
    """A read folder: the skeleton ``model``, ``masks`` of its matrices, N:M counts, and what was read."""

    folder: Folder
    model: nn.Module
    masks: dict[str, torch.Tensor]
    nm: dict[str, NMCount]
    recipes: dict[str, Recipe]
    nonfinite: dict[str, int] = field(default_factory=dict)  # stored key -> NaN/Inf entries
    stored: int = 0  # entries of every tensor read (matrices and vectors)
    stored_zero: int = 0
    notes: list[str] = field(default_factory=list)


def load_folder(spec: str, progress: bool | None = None) -> Loaded:
    """Check ``spec`` (a folder or a cached hub id), build its skeleton and read every tensor once."""
    folder = Folder.open(spec)
    model = build_model(folder.config)
    recipes = plan(model, folder.entries)
    storage_format(folder.config)
    for r in recipes.values():
        for key in r.keys:
            check_dtype(key, folder.entries[key].dtype)
    masks: dict[str, torch.Tensor] = {}
    counts: dict[str, NMCount] = {}
    handles: dict[str, Any] = {}
    bar = _bar(sum(len(folder.compressed.get(k, "x")) for r in recipes.values() for k in r.keys), progress)

    def read(key: str) -> torch.Tensor:
        members = folder.compressed.get(key)
        if members is not None:  # decoded here: one dense tensor at a time
            t = decode(folder.entries[key].shape, raw(members["bitmask"]), raw(members["compressed"]), key)
            bar.update(len(members) - 1)
            return t
        return raw(key)

    def raw(key: str) -> torch.Tensor:
        entry = folder.entries.get(key) or folder.members[key]
        handle = handles.get(entry.shard)
        if handle is None:
            from safetensors import safe_open

            handle = handles[entry.shard] = safe_open(f"{folder.path}/{entry.shard}", framework="pt")
        try:
            t = handle.get_tensor(key)
        except Exception as e:
            raise SpecError(f"cannot read {clip(key)} from shard {clip(entry.shard)}: {first_line(e, 80)}") from None
        bar.update(1)
        return t

    axes = _input_axes(model)

    nonfinite: dict[str, int] = {}
    zeros = [0, 0]  # entries read, zeros among them

    def mask_of(key: str) -> torch.Tensor:
        t = read(key)
        bad = nonfinite_bits(t)  # a vector's are found in the model's state (it is read for real)
        if bad:
            nonfinite[key] = bad
        mask = nonzero_bits(t)
        zeros[0] += mask.numel()
        zeros[1] += mask.numel() - int(mask.sum())
        return mask

    def value(name: str, key: str, param: nn.Parameter) -> torch.Tensor:
        r = recipes[name]
        if param.dim() < 2:
            t = build(r, read)
            _check_shape(name, t, param)
            zeros[0] += t.numel()
            zeros[1] += t.numel() - int(nonzero_bits(t).sum())
            return t
        mask = build(r, mask_of)
        _check_shape(name, mask, param)
        masks[key] = mask
        counts[key] = nm_count(mask, axes.get(key, -1))
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
        handles.clear()
    materialize(model, lambda name, param: values.get(name))
    return Loaded(folder, model, masks, counts, recipes, nonfinite, zeros[0], zeros[1])


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


def analyze_folder(spec: str, seq_len: int = 8, progress: bool | None = None, tracer: str = "auto", **kw: Any):
    """``connectome.analyze`` of a model folder, read one tensor at a time: ``(Analysis, Loaded)``.

    The input is ``seq_len`` token ids (the unit graph does not depend on their values).
    """
    from ..analysis import Analyzer

    loaded = load_folder(spec, progress)
    res = Analyzer(loaded.model, input_shape=(1, seq_len), input_dtype=torch.long, tracer=tracer, **kw).run(
        loaded.masks
    )
    return res, loaded

"""Which stored tensors make each of the model's parameters.

Most parameters are stored under their own name. transformers 5 also renames keys and builds some
parameters from several stored tensors (Mixtral's experts are stored one matrix per expert and
stacked into ``experts.gate_up_proj``); it publishes those rules as the model's conversion mapping, and
connectome applies the same rules (the structural ones: renames, stacking, concatenation, chunks,
transposes) to masks. A rule that changes values (dequantisation) cannot apply to masks and is refused.

Examples
--------
>>> import torch
>>> m = torch.nn.Linear(2, 3)
>>> {name: r.keys for name, r in plan(m, {"weight": None, "bias": None}).items()}
{'weight': ('weight',), 'bias': ('bias',)}
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..io.errors import SpecError
from ..io.tensors import clip

__all__ = ["Recipe", "plan", "build"]

_STRUCTURAL = {"MergeModulelist", "Concatenate", "Chunk", "Transpose", "Split", "PermuteForRope", "Interleave"}


@dataclass(frozen=True)
class Recipe:
    """The stored ``keys`` behind one parameter; with ``ops``, grouped by ``sources`` (a converter's
    source patterns) and combined by those ops in order."""

    keys: tuple[str, ...]
    sources: tuple[tuple[str, tuple[str, ...]], ...] = ()
    ops: tuple[Any, ...] = ()
    target: str = ""


def _conversions(model: nn.Module) -> tuple[list[tuple[str, str]], list[Any]]:
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
    except ImportError:
        return [], []
    try:
        rules = get_model_conversion_mapping(model)  # type: ignore[arg-type]
    except Exception:
        return [], []
    renames, converters = [], []
    for r in rules:
        kind = type(r).__name__
        if kind == "WeightRenaming":
            renames += list(zip(r.source_patterns, r.target_patterns))
        elif kind == "WeightConverter":
            converters.append(r)
    return renames, converters


def _glob(pattern: str) -> re.Pattern:
    return re.compile(re.escape(pattern).replace(r"\*", r"(\d+)") + "$")


def plan(model: nn.Module, stored: Mapping[str, Any]) -> dict[str, Recipe]:
    """For each parameter of ``model`` (tied ones once, under their first name), its :class:`Recipe`.

    A parameter found nowhere is left out: the caller decides (a tied head is no loss; a missing
    matrix is an error).
    """
    params = dict(model.named_parameters())
    renames, converters = _conversions(model)
    renamed: dict[str, str] = {}
    for key in stored:
        new = key
        for src, dst in renames:
            try:
                new = re.sub(src, dst, new)
            except re.error:
                continue
        renamed[new] = key
    prefix = getattr(model, "base_model_prefix", "") or ""
    out: dict[str, Recipe] = {}
    for name in params:
        for cand in (name, name.removeprefix(prefix + "."), f"{prefix}.{name}"):
            if cand in renamed:
                out[name] = Recipe((renamed[cand],))
                break
    for conv in converters:
        ops = tuple(getattr(conv, "operations", ()) or ())
        for target in conv.target_patterns:
            hits: dict[str, dict[str, list[tuple[int, str]]]] = {}
            for src in conv.source_patterns:
                rx = _glob(src)
                for new, key in renamed.items():
                    m = rx.search(new)
                    if m is None:
                        continue
                    head = new[: m.start()]
                    index = int(m.group(1)) if m.groups() else 0
                    hits.setdefault(head + target, {}).setdefault(src, []).append((index, key))
            for name, groups in hits.items():
                if name not in params or name in out:
                    continue
                bad = [type(o).__name__ for o in ops if type(o).__name__ not in _STRUCTURAL]
                if bad:
                    raise SpecError(
                        f"{clip(name)} is stored through a {bad[0]} conversion, which changes values: "
                        "connectome reads masks only from dense or sparse-compressed tensors"
                    )
                sources = tuple(
                    (src, tuple(k for _, k in sorted(groups[src]))) for src in conv.source_patterns if src in groups
                )
                keys = tuple(k for _, ks in sources for k in ks)
                out[name] = Recipe(keys, sources, ops, target)
    return out


def build(recipe: Recipe, read: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """The parameter-shaped tensor of ``recipe``, each stored tensor given by ``read(key)``.

    >>> build(Recipe(("w",)), lambda k: torch.ones(2, 2)).shape
    torch.Size([2, 2])
    """
    if not recipe.ops:
        return read(recipe.keys[0])
    data: dict[str, Any] = {src: [read(k) for k in keys] for src, keys in recipe.sources}
    patterns = [src for src, _ in recipe.sources]
    for op in recipe.ops:
        data = op.convert(data, patterns, [recipe.target])
        patterns = list(data)
    (value,) = data.values()
    return value[0] if isinstance(value, list) else value

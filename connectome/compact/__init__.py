"""Compaction: the dead units an analysis finds, physically removed: a smaller dense model, same outputs.

From one analysis (traced by torch.fx), every channel that no output depends on is removed, and every
channel that no input reaches is removed after its constant is folded into the biases of the layers
that read it. Channels joined by residual adds, concatenations and grouped convolutions are decided
together (:mod:`.channels`); what cannot be removed exactly is kept (:mod:`.plan`). The result is the
traced graph around smaller modules (:mod:`.slicing`), checked in float64 against the original on random
inputs before it is returned.

Examples
--------
>>> import torch
>>> from torch import nn
>>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> with torch.no_grad(): _ = m[2].weight[:, :5].zero_()  # 5 hidden units reach no output
>>> small = compact(m, input_shape=(1, 4))
>>> small.get_submodule("0").out_features, small.compaction.params
(3, (58, 23))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from ..io.errors import SpecError
from ..io.tensors import first_line
from .attention import open_attention
from .measure import max_error, params, random_inputs
from .plan import Plan, clone, plan
from .slicing import bake, build, carry_masks
from .window import is_window_attention, open_windows

__all__ = ["compact", "Compaction", "CompactionError"]


class CompactionError(SpecError):
    """The model cannot be compacted (collapsed, or the result would not equal it)."""


@dataclass
class Compaction:
    """What a compaction did: parameters (before, after), the largest relative output difference seen
    in float64, and per layer with units (linear, convolution, embedding) the units kept of its input
    and output (``{layer: {"in": [kept, of], "out": [kept, of]}}``)."""

    params: tuple[int, int]
    error: float
    layers: dict[str, dict[str, list[int]]]
    folded: list[str] = field(default_factory=list)  # layers whose bias took constants
    kept_constant: int = 0  # channel classes kept: their constant could not be folded exactly
    pinned: int = 0  # ops that keep every channel they touch (attention, reshapes...)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # the kept weights' masks
    align: int = 1  # every layer's width a multiple of this (or whole)
    notes: list[str] = field(default_factory=list)  # what was left as it was, and why

    @property
    def removed_units(self) -> int:
        return sum(v["out"][1] - v["out"][0] for v in self.layers.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "params_before": self.params[0],
            "params_after": self.params[1],
            "max_relative_error": self.error,
            "units_removed": self.removed_units,
            "layers": self.layers,
            "folded": self.folded,
            "kept_constant": self.kept_constant,
            "pinning_ops": self.pinned,
            "align": self.align,
            "notes": self.notes,
        }


def compact(
    model: nn.Module,
    example_inputs: Any = None,
    input_shape: Any = None,
    masks: Mapping[str, torch.Tensor] | None = None,
    input_dtype: torch.dtype | None = None,
    rtol: float = 1e-9,
    trials: int = 3,
    seed: int = 0,
    align: int = 1,
) -> fx.GraphModule:
    """The model without its dead units; ``result.compaction`` is a :class:`Compaction`.

    ``masks`` (name -> 0/1) override the model's own (prune-form masks, else its zeros); masks in either
    form are carried over to the kept weights, in prune form. The model is compacted as in eval mode
    (batch norm by its running statistics). The result is checked against the original in float64 on
    ``trials`` random inputs; beyond ``rtol`` relative, :class:`CompactionError` is raised and nothing
    is returned. With ``align`` (8 or 16), every layer keeps a multiple of that many channels, which CPU
    convolution kernels run faster on: a few dead units stay.
    """
    from ..graph.trace import as_inputs

    original = clone(model).eval()
    if masks:
        _apply(original, masks)
    _as_run(original)
    inputs = as_inputs(example_inputs, input_shape, input_dtype)
    # baked: nn.MultiheadAttention reads a pruned out_proj.weight that only a call of out_proj refreshes
    model64 = bake(clone(original).double(), copy_first=False)[0]
    checks = random_inputs(inputs, trials, seed, high=_vocab(original))
    dtypes = {n.removesuffix("_orig"): t.dtype for n, t in [*original.named_parameters(), *original.named_buffers()]}
    # opened in float64: a constant the opened module computes once (Swin V2's position bias) is model64's
    opened = clone(original).double() if any(_opens(m) for m in original.modules()) else None
    why: Exception | None = None
    if opened is not None and open_attention(opened) + open_windows(opened):  # sliced by row; else whole
        try:
            return _compact(opened, model64, inputs, checks, rtol, align, dtypes)
        except CompactionError as e:
            if "collapsed" in str(e):
                raise
            why = e
        except Exception as e:  # the attention stays whole: the rest is compacted all the same
            why = e
    small = _compact(original, model64, inputs, checks, rtol, align, dtypes)
    if why is not None:
        failed = f"{type(why).__name__}: {first_line(why)}"
        note = f"attention kept whole: opening it failed ({failed})"
        small.compaction.notes.append(note)
    return small


def _compact(original: nn.Module, model64: nn.Module, inputs: tuple, checks: list, rtol: float, align: int, dtypes):
    """Compact ``original`` (eval mode, masks applied) and check it against ``model64`` (the float64 model
    it stands for); parameters and buffers get back ``dtypes`` (by name; the float64 run's are not kept)."""
    from ..analysis import analyze

    res = analyze(original, inputs, tracer="fx")
    if res.collapsed:
        raise CompactionError(
            "the network is collapsed: no input reaches an output, so compacting it would leave nothing; "
            "prune less, or check the masks"
        )
    for keep_one in (False, True):
        p = plan(res, original, checks[0], keep_one, align)
        # in float64 before baking: a parametrization (weight norm) computes as the float64 model does
        plain, prune_masks = bake(clone(original).double(), copy_first=False)
        small = build(p, plain)
        try:
            err = max_error(model64, small, checks)
            break
        except RuntimeError:  # an op that cannot take a tensor with no channel: each layer keeps one
            if keep_one:
                raise
    if not err <= rtol:
        raise CompactionError(
            f"the compacted model's outputs differ from the original's by {err:.3g} (relative, float64) "
            f"beyond {rtol:g}: not compacted; please report this model"
        )
    _restore_dtypes(small, dtypes)
    kept_masks = carry_masks(small, p, prune_masks)
    small.compaction = _report(p, model64, small, err, kept_masks, align)  # type: ignore[assignment]
    return small


def _apply(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """The masks as ``torch.nn.utils.prune`` masks on the model (a copy): carried over like its own."""
    from torch.nn.utils import prune

    for name, mask in masks.items():
        path, _, attr = name.rpartition(".")
        mod = model.get_submodule(path)
        if hasattr(mod, attr + "_mask"):
            prune.remove(mod, attr)
        prune.custom_from_mask(mod, attr, mask.to(torch.float32))


def _as_run(model: nn.Module) -> None:
    """``nn.MultiheadAttention`` reads a pruned ``out_proj.weight`` without calling ``out_proj``, so it
    runs with the weight computed when it was last called or pruned: on this copy, that weight becomes
    what its hook computes, so that the compaction keeps what the model runs with."""
    for m in model.modules():
        out = getattr(m, "out_proj", None) if isinstance(m, nn.MultiheadAttention) else None
        if out is not None and hasattr(out, "weight_orig"):
            with torch.no_grad():
                out.weight_orig.copy_(out.weight)


def _opens(m: nn.Module) -> bool:
    return isinstance(m, nn.MultiheadAttention) or is_window_attention(m)


def _vocab(model: nn.Module) -> int:
    sizes = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
    return min(sizes) if sizes else 2


def _restore_dtypes(gm: nn.Module, dtypes: dict[str, torch.dtype]) -> None:
    """Back to the original's dtypes (the compaction and its check ran in float64); a bias or a constant
    the compaction added takes the dtype of most of the model's parameters."""
    floats = [d for d in dtypes.values() if d.is_floating_point]
    common = max(set(floats), key=floats.count) if floats else torch.float32
    for name, t in [*gm.named_parameters(), *gm.named_buffers()]:
        want = dtypes.get(name, common if t.is_floating_point() else t.dtype)
        if t.dtype != want:
            t.data = t.data.to(want)


def _report(p: Plan, original: nn.Module, small: nn.Module, err: float, masks: dict, align: int) -> Compaction:
    layers = {}
    for target, keep in p.keep.items():
        if p.channels.layers[target].kind == "norm":  # a norm's channels are its input's units, not its own
            continue
        row = {"out": [len(keep.rows if keep.rows is not None else keep.out), keep.units_out]}
        if keep.inp is not None:
            row["in"] = [len(keep.inp), keep.units_in]
        layers[target] = row
    return Compaction(
        (params(original), params(small)), err, layers, sorted(p.folds), p.kept_constant, len(p.pinned), masks, align
    )

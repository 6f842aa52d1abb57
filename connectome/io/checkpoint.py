"""Load a pruned checkpoint safely: every common file format, the pruning form, and separate masks.

:func:`load` never unpickles code unless told to trust the file: state_dicts are read with
``torch.load(weights_only=True)`` or from ``.safetensors``. It unwraps nested dicts (``{"state_dict":
...}``), strips ``module.`` / ``_orig_mod.`` prefixes (DataParallel, torch.compile), turns
``torch.nn.utils.prune``'s ``weight_orig`` + ``weight_mask`` into ``weight = orig * mask`` plus a mask,
and checks the result against the architecture before loading it. Every adaptation is noted.

Examples
--------
>>> import os, tempfile, torch
>>> from torch import nn
>>> m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
>>> path = os.path.join(tempfile.mkdtemp(), "m.pt")
>>> torch.save({"state_dict": nn.DataParallel(m).state_dict()}, path)
>>> ck = load(path, arch=m)
>>> ck.notes
["weights nested under 'state_dict'", "stripped prefix 'module.'"]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .spec import SpecError, load_model
from .tensors import read_tensors

__all__ = ["Checkpoint", "load", "read_tensors", "SpecError"]

_NESTED = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights")
_PREFIXES = ("module.", "_orig_mod.")
_SHOW = 10  # names listed in a mismatch message before it switches to counts


@dataclass
class Checkpoint:
    """A model with the checkpoint's weights loaded, and what was found on the way."""

    model: nn.Module
    input_shape: tuple[int, ...] | None
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # bool, by parameter name
    raw_masks: dict[str, torch.Tensor] = field(default_factory=dict)  # masks as stored (0/1 check)
    disagree: dict[str, int] = field(default_factory=dict)  # masked-out positions whose weight is nonzero
    notes: list[str] = field(default_factory=list)
    path: str | None = None
    format: str = "module"


def _unwrap(obj: Any, notes: list[str]) -> Any:
    """The state_dict inside training checkpoints and wrappers."""
    while isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        key = next((k for k in _NESTED if isinstance(obj.get(k), (Mapping, nn.Module))), None)
        if key is None:
            break
        notes.append(f"weights nested under {key!r}")
        obj = obj[key]
    return obj


def _flat_tensors(sd: Mapping, path: str, notes: list[str]) -> dict[str, torch.Tensor]:
    tensors = {str(k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise SpecError(
            f"{path} holds no tensors (keys: {', '.join(map(str, list(sd)[:5])) or 'none'}); expected a state_dict"
        )
    if len(tensors) < len(sd):
        notes.append(f"ignored {len(sd) - len(tensors)} non-tensor entries")
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in tensors):
                tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
                notes.append(f"stripped prefix {prefix!r}")
                changed = True
    return tensors


def split_pruned(
    tensors: dict[str, torch.Tensor], notes: list[str]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``weight_orig`` + ``weight_mask`` -> ``weight = orig * mask`` and a mask; plain ``X`` + ``X_mask`` too.

    >>> w, m = split_pruned({"fc.weight_orig": torch.ones(2), "fc.weight_mask": torch.tensor([1., 0.])}, [])
    >>> w["fc.weight"].tolist(), m["fc.weight"].tolist()
    ([1.0, 0.0], [1.0, 0.0])
    """
    weights, masks = {}, {}
    for k, v in tensors.items():
        if k.endswith("_mask") and (k[:-5] + "_orig" in tensors or k[:-5] in tensors):
            masks[k[:-5]] = v
        elif k.endswith("_orig") and k[:-5] + "_mask" in tensors:
            mask = tensors[k[:-5] + "_mask"]
            weights[k[:-5]] = v * mask.to(v.dtype) if mask.shape == v.shape else v
        else:
            weights[k] = v
    if masks:
        pruned = sum(1 for k in masks if k + "_orig" in tensors)
        if pruned:
            notes.append(f"torch.nn.utils.prune form: {pruned} weight(s) as weight_orig * weight_mask")
        if len(masks) > pruned:
            notes.append(f"{len(masks) - pruned} mask buffer(s) stored beside plain weights")
    return weights, masks


def _mismatch(path: str, arch: str, model: nn.Module, weights: dict[str, torch.Tensor]) -> str | None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in weights if k not in expected]
    shapes = [
        f"{k}: file {tuple(weights[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in weights
        if k in expected and tuple(weights[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
            parts.append(f"{len(items)} {label} ({'; '.join(items[:_SHOW])}{more})")
    heads = {k.rpartition(".")[0] for k in weights if k in expected and weights[k].shape != expected[k].shape}
    hint = "check --arch and --arch-kwargs"
    if len(heads) == 1 and not missing and not unexpected:  # only the classifier differs: a class count
        head = next(iter(heads))
        n = weights.get(head + ".weight", weights.get(head + ".bias"))
        if n is not None and n.dim() >= 1:
            hint = f"only {head} differs: try --arch-kwargs num_classes={n.shape[0]}"
    return f"{path} does not match {arch}: {', '.join(parts)}; {hint}"


def load(
    checkpoint: str | None = None,
    arch: str | nn.Module | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    masks: str | Mapping[str, torch.Tensor] | None = None,
    trust: bool = False,
) -> Checkpoint:
    """A model with ``checkpoint``'s weights (and masks) loaded; see the module docs for the formats.

    ``arch`` is a spec (``torchvision:resnet18``, ``timm:NAME``, ``package.module:factory``) or a module;
    it may be omitted for a whole-model pickle (which needs ``trust``). ``masks`` is a file or a dict
    of name -> 0/1 tensor and overrides masks found in the checkpoint.

    >>> load(arch="connectome:lenet_300_100").input_shape
    (1, 1, 28, 28)
    """
    notes: list[str] = []
    model: nn.Module | None
    shape = None
    if isinstance(arch, nn.Module):
        model, arch_name = arch, type(arch).__name__
    elif arch:
        model, shape = load_model(arch, trust=trust, kwargs=dict(arch_kwargs or {}))
        arch_name = arch
    else:
        model, arch_name = None, ""
    ck = Checkpoint(model, shape, notes=notes, path=checkpoint)  # type: ignore[arg-type]
    if checkpoint is not None:
        obj, ck.format = read_tensors(checkpoint, trust=trust)
        obj = _unwrap(obj, notes)
        if isinstance(obj, nn.Module):
            if model is not None:
                notes.append(f"the file holds a whole model; its weights are loaded into {arch_name}")
                obj = obj.state_dict()
            else:
                ck.model, model = obj, obj
        if not isinstance(obj, nn.Module):
            if not isinstance(obj, Mapping):
                raise SpecError(f"{checkpoint} holds a {type(obj).__name__}, not a state_dict or a model")
            if model is None:
                raise SpecError(
                    f"{checkpoint} is a state_dict and has no architecture: give it with --arch "
                    f"(torchvision:NAME, timm:NAME or package.module:factory)"
                )
            weights, found = split_pruned(_flat_tensors(obj, checkpoint, notes), notes)
            bad = _mismatch(checkpoint, arch_name, model, weights)
            if bad:
                raise SpecError(bad)
            with torch.no_grad():
                model.load_state_dict(weights, strict=False)
            _set_masks(ck, found, model)
    if model is None:
        raise SpecError("nothing to load: give a checkpoint file, an architecture (--arch), or both")
    if masks is not None:
        given: Mapping[str, torch.Tensor]
        if isinstance(masks, str):
            obj, _ = read_tensors(masks)
            flat = _flat_tensors(_unwrap(obj, []), masks, [])
            given = {k[:-5] if k.endswith("_mask") else k: v for k, v in flat.items()}
            notes.append(f"masks from {masks}")
        else:
            given = masks
        params = dict(model.named_parameters())
        unknown = [k for k in given if k not in params]
        if unknown:
            raise SpecError(
                f"mask file names {len(unknown)} weight(s) the model does not have "
                f"({', '.join(unknown[:_SHOW])}); mask keys must be parameter names like 'fc.weight'"
            )
        wrong = [
            f"{k}: mask {tuple(v.shape)} vs weight {tuple(params[k].shape)}"
            for k, v in given.items()
            if tuple(v.shape) != tuple(params[k].shape)
        ]
        if wrong:
            raise SpecError(f"mask shapes do not match the weights: {'; '.join(wrong[:_SHOW])}")
        _set_masks(ck, dict(given), model)
    if not any(True for _ in model.parameters()):
        raise SpecError(f"{arch_name or checkpoint} has no parameters: nothing to audit")
    ck.model.eval()
    return ck


def _set_masks(ck: Checkpoint, found: Mapping[str, torch.Tensor], model: nn.Module) -> None:
    """Record masks as stored, as bool masks (kept = mask != 0 and weight != 0), and disagreements."""
    params = dict(model.named_parameters())
    for name, raw in found.items():
        w = params.get(name)
        if w is None:  # a pruned module: the parameter is weight_orig, the live weight is an attribute
            w = getattr(model.get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2] + "_orig", None)
        ck.raw_masks[name] = raw
        keep = raw != 0
        if w is not None and tuple(w.shape) == tuple(raw.shape):
            nz = w.detach() != 0
            ck.disagree[name] = int((nz & ~keep).sum())
            keep = keep & nz
        ck.masks[name] = keep

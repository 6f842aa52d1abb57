"""Load a pruned checkpoint safely: every common file format, the pruning form, and separate masks.

:func:`load` never unpickles code unless told to trust the file: state_dicts are read with
``torch.load(weights_only=True)`` or from ``.safetensors``. It unwraps nested dicts (``{"state_dict":
...}``), strips ``module.`` / ``_orig_mod.`` prefixes (DataParallel, torch.compile), turns
``torch.nn.utils.prune``'s ``weight_orig`` + ``weight_mask`` into ``weight = orig * mask`` plus a mask,
and checks the result against the architecture before loading it. Every adaptation is noted.

A hostile file costs no more than its size: every tensor's shape is checked against the architecture
before any product or copy is formed (``weight_orig * weight_mask`` is computed in place, in the
model's own parameter), expanded views and the tensor kinds of :mod:`connectome.io.kinds` are screened
first, and what must be materialised is reserved from :mod:`connectome.memory`'s budget. Messages are one
line that clips user strings (key names, paths) to 80 characters and lists names only while they fit.

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

from .. import memory
from .kinds import check_model, plain, refuse_complex, screen, too_deep
from .spec import SpecError, load_model
from .tensors import clip, clip_path, read_tensors

__all__ = ["Checkpoint", "load", "read_tensors", "SpecError"]

_NESTED = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights")
_PREFIXES = ("module.", "_orig_mod.")
_ROOMS = (160, 100, 60, 0)  # characters of names a mismatch message lists, tried in turn until it fits
_LONGEST = 300  # characters in a message


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


def listing(items: list[str], room: int) -> str:
    """Items (each clipped) while they fit in ``room`` characters, then how many more.

    >>> listing(["a", "b", "c" * 200], 10), listing(["x" * 200], 10), listing(["a", "b"], 0)
    ('a; b and 1 more', 'xxxxxxx...', '2')
    """
    if room <= 0:
        return str(len(items))
    shown: list[str] = []
    used = 0
    for item in items:
        text = clip(item, max(min(80, room), 10))
        if shown and used + len(text) > room:
            break
        shown.append(text)
        used += len(text) + 2
    more = f" and {len(items) - len(shown)} more" if len(shown) < len(items) else ""
    return "; ".join(shown) + more


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
        keys = listing([str(k) for k in list(sd)[:20]], 100) if sd else "none"
        raise SpecError(f"{clip_path(path)} holds no tensors (keys: {keys}); expected a state_dict")
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
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], set[str]]:
    """Weights, masks by weight name, and the names whose weight is ``weight_orig`` still to be multiplied
    by its mask (``torch.nn.utils.prune``'s form); a plain ``X`` + ``X_mask`` is a weight and its mask.

    Nothing is computed here: the product is formed in place once the shapes matched the model.

    >>> w, m, p = split_pruned({"fc.weight_orig": torch.ones(2), "fc.weight_mask": torch.tensor([1., 0.])}, [])
    >>> w["fc.weight"].tolist(), m["fc.weight"].tolist(), p
    ([1.0, 1.0], [1.0, 0.0], {'fc.weight'})
    """
    weights, masks, pruned = {}, {}, set()
    for k, v in tensors.items():
        if k.endswith("_mask") and (k[:-5] + "_orig" in tensors or k[:-5] in tensors):
            masks[k[:-5]] = v
        elif k.endswith("_orig") and k[:-5] + "_mask" in tensors:
            weights[k[:-5]] = v
            pruned.add(k[:-5])
        else:
            weights[k] = v
    if masks:
        if pruned:
            notes.append(f"torch.nn.utils.prune form: {len(pruned)} weight(s) as weight_orig * weight_mask")
        if len(masks) > len(pruned):
            notes.append(f"{len(masks) - len(pruned)} mask buffer(s) stored beside plain weights")
    return weights, masks, pruned


def _mismatch(
    path: str,
    arch: str,
    expected: Mapping[str, torch.Tensor],
    weights: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
) -> str | None:
    """Names and shapes of the file against the model's state_dict (shapes only: no data is read)."""
    missing = [k for k in expected if k not in weights and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in weights if k not in expected]
    shapes = [
        f"{clip(k, 40)}: file {tuple(weights[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in weights
        if k in expected and tuple(weights[k].shape) != tuple(expected[k].shape)
    ] + [
        f"{clip(k, 40)}_mask: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in masks.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return None
    heads = {k.rpartition(".")[0] for k in weights if k in expected and weights[k].shape != expected[k].shape}
    last = next((k.rpartition(".")[0] for k in reversed(list(expected)) if k.endswith(".weight")), None)
    hint = "check --arch and --arch-kwargs"
    if heads == {last} and not missing and not unexpected:  # only the classifier differs: a class count
        head = next(iter(heads))
        n = weights.get(head + ".weight", weights.get(head + ".bias"))
        if n is not None and n.dim() >= 1:
            hint = f"only {clip(head, 40)} differs: try --arch-kwargs num_classes={n.shape[0]}"
    kinds = [(label, items) for label, items in (("missing", missing), ("unexpected", unexpected),
             ("shape mismatches", shapes)) if items]  # fmt: skip
    msg = ""
    for room in _ROOMS:
        each = room // len(kinds)
        parts = [f"{len(items)} {label}" + (f" ({listing(items, each)})" if each else "") for label, items in kinds]
        msg = f"{clip_path(path, 60)} does not match {clip(arch, 60)}: {', '.join(parts)}; {hint}"
        if len(msg) <= _LONGEST:
            break
    return msg


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
    models: list[nn.Module] = []
    try:
        return _load(checkpoint, arch, arch_kwargs, masks, trust, models)
    except RecursionError:  # torch walks modules recursively: a model nested ~1000 deep cannot be walked
        what = arch if isinstance(arch, str) else type(arch).__name__ if arch is not None else str(checkpoint)
        if models:
            raise too_deep(models[-1], what) from None
        raise SpecError(f"{clip(what, 60)} nests too deep for Python's recursion limit: flatten it") from None


def _load(
    checkpoint: str | None,
    arch: str | nn.Module | None,
    arch_kwargs: Mapping[str, Any] | None,
    masks: str | Mapping[str, torch.Tensor] | None,
    trust: bool,
    models: list[nn.Module],
) -> Checkpoint:
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
    if model is not None:
        models.append(model)
        check_model(model, arch_name)
    ck = Checkpoint(model, shape, notes=notes, path=checkpoint)  # type: ignore[arg-type]
    if checkpoint is not None:
        obj, ck.format = read_tensors(checkpoint, trust=trust)
        obj = _unwrap(obj, notes)
        if isinstance(obj, nn.Module):
            if model is not None:
                notes.append(f"the file holds a whole model; its weights are loaded into {arch_name}")
                obj = obj.state_dict()
            else:
                models.append(obj)
                check_model(obj, clip_path(checkpoint))
                ck.model, model = obj, obj
        if not isinstance(obj, nn.Module):
            if not isinstance(obj, Mapping):
                raise SpecError(f"{clip_path(checkpoint)} holds a {type(obj).__name__}, not a state_dict or a model")
            if model is None:
                raise SpecError(
                    f"{clip_path(checkpoint)} is a state_dict and has no architecture: give it with --arch "
                    f"(torchvision:NAME, timm:NAME or package.module:factory)"
                )
            _load_state(ck, obj, checkpoint, arch_name, model)
    if model is None:
        raise SpecError("nothing to load: give a checkpoint file, an architecture (--arch), or both")
    if masks is not None:
        _load_masks(ck, masks, model)
    if not any(True for _ in model.parameters()):
        raise SpecError(f"{clip(arch_name or checkpoint)} has no parameters: nothing to audit")
    ck.model.eval()
    return ck


def _load_state(ck: Checkpoint, obj: Mapping, path: str, arch_name: str, model: nn.Module) -> None:
    """Check a state_dict's names, shapes and kinds against ``model``, then load it (and its masks)."""
    where = clip_path(path)
    tensors = _flat_tensors(obj, path, ck.notes)
    screen(tensors, where)  # meta, expanded views...: before anything reads them
    weights, found, pruned = split_pruned(tensors, ck.notes)
    expected = model.state_dict()
    bad = _mismatch(path, arch_name, expected, weights, found)
    if bad:
        raise SpecError(bad)
    refuse_complex(weights, where, allowed=[k for k, v in expected.items() if v.is_complex()])
    refuse_complex(found, where)
    # one pass, so that one note counts weights and masks: masks keep their file names meanwhile
    both = plain({**weights, **{k + "_mask": v for k, v in found.items()}}, where, ck.notes)
    found = {k: both.pop(k + "_mask") for k in found}
    weights = both
    with torch.no_grad():
        model.load_state_dict(weights, strict=False)
        if pruned:
            live: dict[str, torch.Tensor] = dict(model.named_parameters())
            live.update(model.named_buffers())
            for k in pruned:  # weight = weight_orig * weight_mask, in the model's own tensor
                memory.reserve(found[k].numel() * live[k].element_size(), f"the mask of {clip(k)}")
                live[k].mul_(found[k].to(live[k].dtype))
    _set_masks(ck, found, model)


def _load_masks(ck: Checkpoint, masks: str | Mapping[str, torch.Tensor], model: nn.Module) -> None:
    """Masks from a file or a mapping: names and shapes checked against the parameters before use."""
    given: dict[str, torch.Tensor]
    if isinstance(masks, str):
        obj, _ = read_tensors(masks, what="mask")
        where = clip_path(masks)
        flat = _flat_tensors(_unwrap(obj, []), masks, [])
        given = {k[:-5] if k.endswith("_mask") else k: v for k, v in flat.items()}
        ck.notes.append(f"masks from {where}")
    else:
        where = "the masks given"
        given = {str(k): v if isinstance(v, torch.Tensor) else torch.as_tensor(v) for k, v in masks.items()}
    screen(given, where)
    params = dict(model.named_parameters())
    unknown = [k for k in given if k not in params]
    if unknown:
        raise SpecError(
            f"mask file names {len(unknown)} weight(s) the model does not have "
            f"({listing(unknown, 120)}); mask keys must be parameter names like 'fc.weight'"
        )
    wrong = [
        f"{clip(k, 40)}: mask {tuple(v.shape)} vs weight {tuple(params[k].shape)}"
        for k, v in given.items()
        if tuple(v.shape) != tuple(params[k].shape)
    ]
    if wrong:
        raise SpecError(f"mask shapes do not match the weights: {listing(wrong, 200)}")
    refuse_complex(given, where)
    _set_masks(ck, plain(given, where, ck.notes), model)


def _set_masks(ck: Checkpoint, found: Mapping[str, torch.Tensor], model: nn.Module) -> None:
    """Record masks as stored, as bool masks (kept = mask != 0 and weight != 0), and disagreements."""
    params = dict(model.named_parameters())
    for name, raw in found.items():
        w = params.get(name)
        if w is None:  # a pruned module: the parameter is weight_orig, the live weight is an attribute
            w = getattr(model.get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2] + "_orig", None)
        ck.raw_masks[name] = raw
        memory.reserve(2 * raw.numel(), f"the mask of {clip(name)}")
        keep = raw != 0
        if w is not None and tuple(w.shape) == tuple(raw.shape):
            nz = w.detach() != 0
            ck.disagree[name] = int((nz & ~keep).sum())
            keep = keep & nz
        ck.masks[name] = keep

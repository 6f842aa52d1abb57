"""Resolve a model spec from the command line into an ``nn.Module`` and a default input shape.

Specs: ``torchvision:resnet18``, ``connectome:lenet_300_100`` (the paper's models),
``package.module:factory`` or ``path/to/file.py:factory`` (a callable returning a module), or a file
written by ``torch.save(model)`` (a pickle, which can run code: refused unless ``trust=True``).

Examples
--------
>>> m, shape = load_model("connectome:lenet_300_100")
>>> type(m).__name__, shape
('Sequential', (1, 1, 28, 28))
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any

import torch
from torch import nn

__all__ = ["SpecError", "load_model", "parse_shape", "load_state_dict"]


class SpecError(ValueError):
    """A model spec, weights file or shape could not be used; the message says how to fix it."""


def parse_shape(text: str) -> list[tuple[int, ...]]:
    """``"1,3,32,32"`` -> ``[(1, 3, 32, 32)]``; several inputs are separated by ``;``.

    >>> parse_shape("1,3,8,8;1,10")
    [(1, 3, 8, 8), (1, 10)]
    """
    shapes = []
    for part in text.replace(" ", "").split(";"):
        try:
            dims = tuple(int(d) for d in part.strip("()[]x").replace("x", ",").split(",") if d)
        except ValueError:
            raise SpecError(f"bad input shape {text!r}: use comma-separated integers, e.g. 1,3,32,32") from None
        if not dims or any(d <= 0 for d in dims):
            raise SpecError(f"bad input shape {text!r}: every dimension must be a positive integer")
        shapes.append(dims)
    return shapes


def load_model(spec: str, trust: bool = False) -> tuple[nn.Module, tuple[int, ...] | None]:
    """The module a spec names, and its natural input shape when known (else None)."""
    if os.path.isfile(spec):
        return _load_pickle(spec, trust), None
    scheme, sep, name = spec.partition(":")
    if not sep or not name:
        if os.path.exists(spec):
            raise SpecError(f"{spec} is a directory, not a model file")
        raise SpecError(f"cannot resolve model {spec!r}: use torchvision:NAME, connectome:NAME, "
                        f"package.module:factory, file.py:factory, or a file saved with torch.save(model)")
    if scheme == "torchvision":
        return _torchvision(name)
    if scheme == "connectome":
        from . import models
        if name not in models.MODELS:
            raise SpecError(f"unknown connectome model {name!r}; choose from {', '.join(models.MODELS)}")
        return models.MODELS[name](), models.INPUT_SHAPES[name]
    return _factory(scheme, name)


def _torchvision(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    try:
        import torchvision
    except ImportError:
        raise SpecError("torchvision is not installed: pip install 'connectome[zoo]'") from None
    try:
        model = torchvision.models.get_model(name, weights=None)
    except ValueError:
        raise SpecError(f"torchvision has no model {name!r}; see torchvision.models.list_models()") from None
    size = 299 if name == "inception_v3" else 224
    return model, (1, 3, size, size)


def _factory(module_name: str, attr: str) -> tuple[nn.Module, tuple[int, ...] | None]:
    if module_name.endswith(".py"):
        if not os.path.isfile(module_name):
            raise SpecError(f"no such file: {module_name}")
        key = "_connectome_user_" + os.path.splitext(os.path.basename(module_name))[0]
        loader = importlib.util.spec_from_file_location(key, module_name)
        mod = importlib.util.module_from_spec(loader)
        sys.modules[key] = mod
        loader.loader.exec_module(mod)
    else:
        try:
            mod = importlib.import_module(module_name)
        except ImportError as e:
            raise SpecError(f"cannot import {module_name!r} ({e}); is it installed or on PYTHONPATH?") from None
    fn = getattr(mod, attr, None)
    if fn is None:
        raise SpecError(f"{module_name} has no attribute {attr!r}")
    model = fn() if callable(fn) and not isinstance(fn, nn.Module) else fn
    if not isinstance(model, nn.Module):
        raise SpecError(f"{module_name}:{attr} returned {type(model).__name__}, not a torch.nn.Module")
    shape = getattr(model, "input_shape", None) or getattr(fn, "input_shape", None)
    return model, tuple(shape) if shape else None


def _load_pickle(path: str, trust: bool) -> nn.Module:
    if not trust:
        raise SpecError(f"{path} would be loaded as a whole-model pickle, which can run arbitrary code; "
                        f"pass --trust if you trust its author, or save a state_dict and use --weights")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise SpecError(f"cannot load {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(obj, nn.Module):
        raise SpecError(f"{path} holds a {type(obj).__name__}, not a model; give the architecture as "
                        f"MODEL and this file as --weights")
    return obj


def load_state_dict(model: nn.Module, path: str) -> list[str]:
    """Load a state_dict file into ``model`` (safe loading); returns notes on what was adapted."""
    if not os.path.isfile(path):
        raise SpecError(f"no such weights file: {path}")
    try:
        sd: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SpecError(f"cannot read {path} as a state_dict ({type(e).__name__}); save it with "
                        f"torch.save(model.state_dict(), path)") from None
    notes = []
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd, _ = sd[key], notes.append(f"weights nested under {key!r}")
    if not isinstance(sd, dict):
        raise SpecError(f"{path} does not hold a state_dict (found {type(sd).__name__})")
    for prefix in ("module.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
            notes.append(f"stripped prefix {prefix!r}")
    _apply_prune_form(model, sd)
    result = model.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise SpecError(f"{path} does not match the model: missing {list(result.missing_keys)[:10]}, "
                        f"unexpected {list(result.unexpected_keys)[:10]}")
    return notes


def _apply_prune_form(model: nn.Module, sd: dict) -> None:
    """Give modules ``weight_orig``/``weight_mask`` slots when the file is in torch.nn.utils.prune form."""
    import torch.nn.utils.prune as prune
    for key in list(sd):
        if key.endswith("_mask") and key[: -len("_mask")] + "_orig" in sd:
            mod_name, _, attr = key[: -len("_mask")].rpartition(".")
            module = model.get_submodule(mod_name)
            if not hasattr(module, attr + "_orig"):
                prune.identity(module, attr)

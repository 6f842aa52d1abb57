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
import inspect
import os
import sys
from typing import Any

from torch import nn

from .errors import SpecError
from .tensors import read_tensors

__all__ = ["SpecError", "load_model", "parse_shape", "parse_kwargs"]


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


def parse_kwargs(items: str | list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """``"num_classes=100,dropout=0.1"`` -> ``{"num_classes": 100, "dropout": 0.1}`` (Python literals, else text).

    >>> parse_kwargs(["num_classes=10", "name=big,flag=True"])
    {'num_classes': 10, 'name': 'big', 'flag': True}
    """
    import ast

    if not items:
        return {}
    out: dict[str, Any] = {}
    for item in [items] if isinstance(items, str) else items:
        for part in filter(None, (p.strip() for p in item.split(","))):
            key, sep, value = part.partition("=")
            if not sep or not key.strip().isidentifier():
                raise SpecError(f"bad keyword argument {part!r}: use NAME=VALUE, e.g. num_classes=100")
            try:
                out[key.strip()] = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError):
                out[key.strip()] = value.strip()
    return out


def load_model(
    spec: str, trust: bool = False, kwargs: dict[str, Any] | None = None
) -> tuple[nn.Module, tuple[int, ...] | None]:
    """The module a spec names, and its natural input shape when known (else None).

    ``kwargs`` go to the factory (``num_classes=100``); specs: ``torchvision:NAME``, ``timm:NAME``,
    ``connectome:NAME``, ``package.module:factory``, ``file.py:factory``, or a pickled model file.
    """
    kwargs = kwargs or {}
    if os.path.isfile(spec):
        return _load_pickle(spec, trust), None
    scheme, sep, name = spec.partition(":")
    if not sep or not name:
        if os.path.exists(spec):
            raise SpecError(f"{spec} is a directory, not a model file")
        raise SpecError(
            f"cannot resolve model {spec!r}: use torchvision:NAME, timm:NAME, connectome:NAME, "
            f"package.module:factory, file.py:factory, or a file saved with torch.save(model)"
        )
    try:
        if scheme == "torchvision":
            return _torchvision(name, kwargs)
        if scheme == "timm":
            return _timm(name, kwargs)
        if scheme == "connectome":
            from .. import models

            if name not in models.MODELS:
                raise SpecError(f"unknown connectome model {name!r}; choose from {', '.join(models.MODELS)}")
            return models.MODELS[name](**kwargs), models.INPUT_SHAPES[name]
        return _factory(scheme, name, kwargs)
    except TypeError as e:  # a keyword the factory does not take
        if kwargs:
            raise SpecError(f"{spec} does not accept {sorted(kwargs)}: {e}") from None
        raise


def _timm(name: str, kwargs: dict) -> tuple[nn.Module, tuple[int, ...]]:
    try:
        import timm
    except ImportError:
        raise SpecError("timm is not installed: pip install timm") from None
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except RuntimeError as e:
        raise SpecError(f"timm has no model {name!r} ({e}); see timm.list_models()") from None
    size = getattr(model, "default_cfg", {}).get("input_size", (3, 224, 224))
    return model, (1,) + tuple(size)


def _torchvision(name: str, kwargs: dict | None = None) -> tuple[nn.Module, tuple[int, ...]]:
    try:
        import torchvision
    except ImportError:
        raise SpecError("torchvision is not installed: pip install 'connectome[zoo]'") from None
    kwargs = dict(kwargs or {})
    try:
        builder = torchvision.models.get_model_builder(name)
        # detection and segmentation builders download ImageNet backbone weights unless told not to
        if "weights_backbone" in inspect.signature(builder).parameters:
            kwargs.setdefault("weights_backbone", None)
        model = builder(weights=None, **kwargs)
    except ValueError:
        raise SpecError(f"torchvision has no model {name!r}; see torchvision.models.list_models()") from None
    size = 299 if name == "inception_v3" else 224
    return model, (1, 3, size, size)


def _factory(module_name: str, attr: str, kwargs: dict | None = None) -> tuple[nn.Module, tuple[int, ...] | None]:
    if module_name.endswith(".py"):
        if not os.path.isfile(module_name):
            raise SpecError(f"no such file: {module_name}")
        key = "_connectome_user_" + os.path.splitext(os.path.basename(module_name))[0]
        found = importlib.util.spec_from_file_location(key, module_name)
        if found is None or found.loader is None:
            raise SpecError(f"cannot load {module_name} as a Python module")
        mod = importlib.util.module_from_spec(found)
        sys.modules[key] = mod
        found.loader.exec_module(mod)
    else:
        try:
            mod = importlib.import_module(module_name)
        except ImportError as e:
            raise SpecError(f"cannot import {module_name!r} ({e}); is it installed or on PYTHONPATH?") from None
    fn = getattr(mod, attr, None)
    if fn is None:
        raise SpecError(f"{module_name} has no attribute {attr!r}")
    model = fn(**(kwargs or {})) if callable(fn) and not isinstance(fn, nn.Module) else fn
    if not isinstance(model, nn.Module):
        raise SpecError(f"{module_name}:{attr} returned {type(model).__name__}, not a torch.nn.Module")
    shape = getattr(model, "input_shape", None) or getattr(fn, "input_shape", None)
    return model, tuple(shape) if shape else None


def _load_pickle(path: str, trust: bool) -> nn.Module:
    obj, fmt = read_tensors(path, trust=trust)  # safe unless trusted; refuses code-carrying pickles
    if isinstance(obj, dict) and not fmt.startswith("pickle"):
        raise SpecError(
            f"{path} is a state_dict, not a model: give the architecture as MODEL and this file "
            f"as --weights (or use connectome audit {path} --arch MODEL)"
        )
    if not isinstance(obj, nn.Module):
        raise SpecError(
            f"{path} holds a {type(obj).__name__}, not a model; give the architecture as "
            f"MODEL and this file as --weights"
        )
    return obj

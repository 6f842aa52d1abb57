"""Resolve a model spec from the command line into an ``nn.Module`` and a default input shape.

Specs: ``torchvision:resnet18``, ``connectome:lenet_300_100`` (the paper's models),
``package.module:factory`` or ``path/to/file.py:factory`` (a callable returning a module), or a file
written by ``torch.save(model)`` (a pickle, which can run code: refused unless ``trust=True``).

A ``.py`` spec is split at its last colon (the path may hold colons); any other at its first (a timm
name may hold colons). Whatever the user's code does wrong (a syntax error, an exception at import, a
missing dependency, a factory that needs arguments or raises) is one line that names the file and the
fix; ``SystemExit`` and ``KeyboardInterrupt`` pass through.

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
import math
import os
import sys
from typing import Any

from torch import nn

from .errors import SpecError
from .kinds import check_model
from .tensors import check_file, clip, clip_path, first_line, read_tensors

__all__ = ["SpecError", "load_model", "parse_shape", "parse_kwargs", "split_spec"]

MAX_DIMS = 8  # dimensions of one input
MAX_ELEMENTS = 2**62  # elements of one input: beyond, sizes overflow torch's int64 arithmetic


def parse_shape(text: str) -> list[tuple[int, ...]]:
    """``"1,3,32,32"`` -> ``[(1, 3, 32, 32)]``; several inputs are separated by ``;``.

    >>> parse_shape("1,3,8,8;1,10")
    [(1, 3, 8, 8), (1, 10)]
    >>> parse_shape("99999999999999999999,3")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    connectome.io.errors.SpecError: bad input shape '99999999999999999999,3': its dimensions multiply to more ...
    """
    shapes = []
    shown = clip(text)
    for part in text.replace(" ", "").split(";"):
        try:
            dims = tuple(int(d) for d in part.strip("()[]x").replace("x", ",").split(",") if d)
        except ValueError:  # not a number, or one of more than 4300 digits
            raise SpecError(f"bad input shape {shown!r}: use comma-separated integers, e.g. 1,3,32,32") from None
        if not dims or any(d <= 0 for d in dims):
            raise SpecError(f"bad input shape {shown!r}: every dimension must be a positive integer")
        if len(dims) > MAX_DIMS:
            raise SpecError(f"bad input shape {shown!r}: {len(dims)} dimensions, more than {MAX_DIMS}")
        if math.prod(dims) > MAX_ELEMENTS:
            raise SpecError(
                f"bad input shape {shown!r}: its dimensions multiply to more than 2**62 elements; "
                f"give the size of one real input"
            )
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
                raise SpecError(f"bad keyword argument {clip(part)!r}: use NAME=VALUE, e.g. num_classes=100")
            try:
                out[key.strip()] = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError, MemoryError, RecursionError):  # not a literal: text
                out[key.strip()] = value.strip()
    return out


def split_spec(spec: str) -> tuple[str, str]:
    """``(module or file, name)``: a ``.py`` path is split at its last colon, anything else at its first.

    >>> split_spec("runs/a:b/m.py:build"), split_spec("timm:hf-hub:org/model"), split_spec("justaname")
    (('runs/a:b/m.py', 'build'), ('timm', 'hf-hub:org/model'), ('justaname', ''))
    """
    head, sep, tail = spec.rpartition(":")
    if sep and head.endswith(".py"):
        return head, tail
    scheme, _, name = spec.partition(":")
    return scheme, name


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
    scheme, name = split_spec(spec)
    if not name:
        if os.path.lexists(spec):
            check_file(spec, "model")  # a directory, a FIFO, a device, an unreadable file: says which
        raise SpecError(
            f"cannot resolve model {clip(spec)!r}: use torchvision:NAME, timm:NAME, connectome:NAME, "
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
                raise SpecError(f"unknown connectome model {clip(name)!r}; choose from {', '.join(models.MODELS)}")
            return models.MODELS[name](**kwargs), models.INPUT_SHAPES[name]
        return _factory(scheme, name, kwargs)
    except TypeError as e:  # a keyword the factory does not take
        if kwargs:
            raise SpecError(f"{clip(spec)} does not accept {clip(sorted(kwargs))}: {first_line(e)}") from None
        raise


def _timm(name: str, kwargs: dict) -> tuple[nn.Module, tuple[int, ...]]:
    try:
        import timm
    except ImportError:
        raise SpecError("timm is not installed: pip install timm") from None
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except RuntimeError as e:
        raise SpecError(f"timm has no model {clip(name)!r} ({first_line(e)}); see timm.list_models()") from None
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
        raise SpecError(f"torchvision has no model {clip(name)!r}; see torchvision.models.list_models()") from None
    size = 299 if name == "inception_v3" else 224
    return model, (1, 3, size, size)


def _import_error(shown: str, e: Exception) -> str:
    """One line for what importing the user's module raised."""
    if isinstance(e, SyntaxError):  # IndentationError and TabError too
        where = ""
        if e.filename and os.path.basename(e.filename) != os.path.basename(shown):
            where = f" of {clip_path(os.path.basename(e.filename), 40)}"
        return f"cannot load {shown}: {type(e).__name__} at line {e.lineno}{where}: {clip(e.msg)}"
    if isinstance(e, ModuleNotFoundError):
        return f"{shown} imports a module that is not installed: {first_line(e)}; install it or fix the import"
    return f"{shown} raised {type(e).__name__} at import: {first_line(e)}"


def _import(module_name: str) -> Any:
    """The module of a ``file.py:factory`` or ``package.module:factory`` spec."""
    if not module_name.endswith(".py"):
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
                raise SpecError(
                    f"cannot import {clip(module_name)!r} ({first_line(e)}); is it installed or on PYTHONPATH?"
                ) from None
            raise SpecError(_import_error(clip(module_name), e)) from None
        except Exception as e:
            raise SpecError(_import_error(clip(module_name), e)) from None
    check_file(module_name, "Python")
    shown = clip_path(module_name)
    key = "_connectome_user_" + os.path.splitext(os.path.basename(module_name))[0]
    found = importlib.util.spec_from_file_location(key, module_name)
    if found is None or found.loader is None:
        raise SpecError(f"cannot load {shown} as a Python module")
    mod = importlib.util.module_from_spec(found)
    sys.modules[key] = mod
    try:
        found.loader.exec_module(mod)
    except Exception as e:  # SystemExit and KeyboardInterrupt are not Exceptions: they pass
        sys.modules.pop(key, None)
        raise SpecError(_import_error(shown, e)) from None
    return mod


def _arguments(fn: Any, kwargs: dict, what: str) -> None:
    """Refuse a call of ``fn(**kwargs)`` that cannot bind: arguments missing, or not taken."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins and some C callables have no signature: just call them
        return
    names = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY)]
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            takes = f"it takes ({clip(', '.join(names), 60)})" if names else "it takes no arguments"
            raise SpecError(f"{what} does not accept {clip(', '.join(unknown), 60)}: {takes}; fix --arch-kwargs")
    needed = [
        p.name
        for p in params
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in kwargs
    ]
    if needed:
        raise SpecError(
            f"{what} needs arguments ({clip(', '.join(needed), 60)}): pass them with --arch-kwargs "
            + clip(",".join(f"{n}=..." for n in needed), 80)
        )


def _factory(module_name: str, attr: str, kwargs: dict | None = None) -> tuple[nn.Module, tuple[int, ...] | None]:
    mod = _import(module_name)
    shown = clip_path(module_name) if module_name.endswith(".py") else clip(module_name)
    what = f"{shown}:{clip(attr, 40)}"
    try:
        fn = getattr(mod, attr, None)
    except Exception as e:  # a module-level __getattr__ that raises
        raise SpecError(f"{what} raised {type(e).__name__}: {first_line(e)}") from None
    if fn is None:
        raise SpecError(f"{shown} has no attribute {clip(attr, 40)!r}")
    if callable(fn) and not isinstance(fn, nn.Module):
        _arguments(fn, kwargs or {}, what)
        try:
            model = fn(**(kwargs or {}))
        except SpecError:
            raise
        except Exception as e:  # SystemExit and KeyboardInterrupt pass
            raise SpecError(f"{what} raised {type(e).__name__}: {first_line(e)}") from None
    else:
        model = fn
    if not isinstance(model, nn.Module):
        raise SpecError(f"{what} returned {type(model).__name__}, not a torch.nn.Module")
    shape = getattr(model, "input_shape", None) or getattr(fn, "input_shape", None)
    return model, tuple(shape) if shape else None


def _load_pickle(path: str, trust: bool) -> nn.Module:
    obj, fmt = read_tensors(path, trust=trust, what="model")  # safe unless trusted; refuses code-carrying pickles
    shown = clip_path(path)
    if isinstance(obj, dict) and not fmt.startswith("pickle"):
        raise SpecError(
            f"{shown} is a state_dict, not a model: give the architecture as MODEL and this file "
            f"as --weights (or use connectome audit FILE --arch MODEL)"
        )
    if not isinstance(obj, nn.Module):
        raise SpecError(
            f"{shown} holds a {type(obj).__name__}, not a model; give the architecture as "
            f"MODEL and this file as --weights"
        )
    check_model(obj, shown)
    return obj

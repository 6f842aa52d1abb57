"""Part of a model: analyse one submodule with its own inputs and outputs, under the whole model's names.

Detection models (Faster R-CNN, RetinaNet...) cannot be traced whole: they loop over images, keep boxes
by score and run non-maximum suppression. People prune their backbone and neck, which trace fine. A
part's inputs are given directly, or captured by running the whole model once on its own inputs.

Examples
--------
>>> import torch, connectome
>>> m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
>>> with torch.no_grad(): m[2].weight[:, 0] = 0
>>> res = connectome.analyze(m, input_shape=(1, 3), submodule="2")
>>> sorted(res.effective_masks)              # the whole model's names
['2.weight']
>>> captured = capture_inputs(m, (torch.zeros(1, 4),), "2")
>>> tuple(captured[0].shape)
(1, 3)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from . import memory
from .graph.trace import TraceError
from .io.masks import prunable_weights

__all__ = ["submodule_of", "capture_inputs", "prefixed", "analysable_parts", "untouched", "with_parts"]


def submodule_of(model: nn.Module, name: str) -> nn.Module:
    """``model.get_submodule(name)``, with an error that lists the names there are.

    >>> submodule_of(torch.nn.Sequential(torch.nn.Linear(2, 2)), "0").out_features
    2
    """
    try:
        return model.get_submodule(name)
    except AttributeError:
        children = [n for n, _ in model.named_children()]
        raise TraceError(
            f"{type(model).__name__} has no submodule {name!r}; its children are {', '.join(children) or 'none'}"
        ) from None


@contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode without gradients and leave it as it was: modes, and buffers that its
    forward writes in place (a running average, a decaying scale).

    >>> m = torch.nn.BatchNorm1d(2).train()
    >>> with untouched(m): _ = m(torch.randn(4, 2))
    >>> m.training, m.num_batches_tracked.item()
    (True, 0)
    """
    training = [m for m in model.modules() if m.training]
    saved = [(b, b._version, b.detach().clone()) for b in model.buffers()]
    try:
        model.eval()
        with torch.no_grad():
            yield
    finally:
        with torch.no_grad():
            for b, version, value in saved:
                if b._version != version:
                    b.copy_(value)
        for m in training:
            m.train()


def capture_inputs(model: nn.Module, example_inputs: tuple, name: str) -> tuple:
    """The positional inputs of submodule ``name`` the first time the whole model calls it on ``example_inputs``.

    Raises :class:`TraceError` when the model never calls it, or calls it with keyword arguments.
    """
    part = submodule_of(model, name)
    found: list[tuple] = []

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not found:
            found.append((args, kwargs))

    _reserve_eager(example_inputs)
    handle = part.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with untouched(model):
            model(*example_inputs)
    finally:
        handle.remove()
    if not found:
        raise TraceError(f"the model never calls {name!r} on these inputs: give its inputs with an input shape")
    args, kwargs = found[0]
    if kwargs:
        raise TraceError(
            f"{name!r} is called with keyword arguments ({', '.join(kwargs)}): give its inputs with an input shape"
        )
    return tuple(args)


def prefixed(res: Any, prefix: str) -> Any:
    """The analysis of a submodule with every weight and layer named as in the whole model."""
    if not prefix:
        return res
    p = prefix + "."

    def keys(d: dict) -> dict:
        return {p + k: v for k, v in d.items()}

    layers = [
        dict(r, name=p + r["name"], shared_with=[p + s for s in r.get("shared_with", [])])
        if "shared_with" in r
        else dict(r, name=p + r["name"])
        for r in res.layers
    ]
    return dataclasses.replace(
        res, effective_masks=keys(res.effective_masks), masks=keys(res.masks), kinds=keys(res.kinds), layers=layers
    )


def _tensors_only(v: Any) -> bool:
    if isinstance(v, torch.Tensor):
        return True
    return isinstance(v, (tuple, list)) and len(v) > 0 and all(_tensors_only(x) for x in v)


def _reserve_eager(example_inputs: tuple) -> None:
    """An eager run holds every activation: about 64 times the inputs in the common families."""
    size = sum(x.numel() * x.element_size() for x in example_inputs if isinstance(x, torch.Tensor))
    memory.reserve(64 * size, "running the model once")


def analysable_parts(model: nn.Module, example_inputs: tuple, depth: int = 2, tracer: str = "auto") -> list[str]:
    """Submodules with prunable weights that trace on the inputs the whole model gives them, shallowest first.

    The whole model runs once, eagerly, with a hook on every candidate; a part found traceable is not
    searched inside.
    """
    from .graph.trace import trace

    _reserve_eager(example_inputs)
    candidates = [n for n, m in model.named_modules() if n and n.count(".") < depth and prunable_weights(m)]
    seen: dict[str, tuple] = {}
    hooks = []
    for n in candidates:

        def hook(_m: nn.Module, args: tuple, kwargs: dict, n: str = n) -> None:
            seen.setdefault(n, (args, kwargs))

        hooks.append(model.get_submodule(n).register_forward_pre_hook(hook, with_kwargs=True))
    try:
        with untouched(model):
            model(*example_inputs)
    except Exception:
        return []
    finally:
        for h in hooks:
            h.remove()
    found: list[str] = []
    for n in candidates:
        if n not in seen or any(n.startswith(f + ".") for f in found):
            continue
        args, kwargs = seen[n]
        if kwargs or not args or not _tensors_only(args):
            continue
        try:
            trace(model.get_submodule(n), tuple(args), tracer=tracer)
        except Exception:
            continue
        found.append(n)
    return found


def with_parts(e: TraceError, model: nn.Module, example_inputs: Callable[[], tuple]) -> TraceError:
    """The trace error ``e`` of ``model``, naming the submodules that can be analysed instead
    (:func:`analysable_parts`, on the inputs ``example_inputs()`` makes); ``e`` itself where there are none.

    >>> str(with_parts(TraceError("x"), nn.Linear(2, 2), lambda: (torch.ones(1, 2),)))
    'x'
    """
    try:
        parts = analysable_parts(model, example_inputs())
    except Exception:
        parts = []
    if not parts:
        return e
    err = TraceError(f"{e}; these parts of it can be analysed (submodule=... or --submodule): {', '.join(parts)}")
    err.parts = parts  # type: ignore[attr-defined]
    return err

"""The record of one corpus entry and the small helpers the ``models_*`` files build entries from.

An entry is a tiny model written in one common idiom, example inputs, and a ``kill`` that zeroes some
weights so that some units die: a sound and useful analysis must then find some ineffective weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

__all__ = ["Idiom", "TRACERS", "NO_FX", "seeded", "randn", "ids", "zero", "rows", "cols", "kills"]

TRACERS = ("fx", "export", "export-core", "auto")
NO_FX = ("export", "export-core", "auto")     # transformers 5 dropped torch.fx support


@dataclass(frozen=True)
class Idiom:
    """One corpus entry.

    ``additive`` names parameters or buffers (substrings of their names) that enter the model additively
    beyond the defaults ``bias`` and ``running_mean`` (added position embeddings, a constant that only
    adds): the soundness protocol zeroes them. Class tokens, learned queries, latents, scales and
    LayerScale are never additive. ``vocab`` > 0 says integer inputs are token ids below it, so random
    draws of them are valid inputs; with 0 they stay as given.
    """

    name: str
    family: str
    build: Callable[[], nn.Module]
    inputs: tuple
    kill: Callable[[nn.Module], None]
    additive: tuple[str, ...] = ()
    tracers: tuple[str, ...] = TRACERS
    vocab: int = 0
    note: str = ""


def seeded(cls: Callable[..., nn.Module], *args, **kwargs) -> Callable[[], nn.Module]:
    """A zero-argument factory that builds ``cls(*args, **kwargs)`` with the global seed fixed."""
    def build() -> nn.Module:
        torch.manual_seed(0)
        return cls(*args, **kwargs)
    build.__qualname__ = f"seeded({getattr(cls, '__name__', cls)})"
    return build


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def ids(*shape: int, high: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(seed))


def _resolve(model: nn.Module, path: str) -> torch.Tensor:
    mod_name, _, attr = path.rpartition(".")
    t = getattr(model.get_submodule(mod_name) if mod_name else model, attr)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{path} is not a tensor")
    return t


def zero(path: str, index) -> Callable[[nn.Module], None]:
    """A kill that sets ``tensor[index] = 0`` for the parameter or buffer at ``path``."""
    def kill(model: nn.Module) -> None:
        with torch.no_grad():
            _resolve(model, path)[index] = 0
    kill.__qualname__ = f"zero({path}, {index})"
    return kill


def rows(path: str, *idx: int) -> Callable[[nn.Module], None]:
    """Zero rows (output units, output channels) of a weight: those units die."""
    return zero(path, (list(idx),))


def cols(path: str, *idx: int) -> Callable[[nn.Module], None]:
    """Zero columns (input units, input channels) of a weight: the units feeding them reach nothing here."""
    return zero(path, (slice(None), list(idx)))


def kills(*fns: Callable[[nn.Module], None]) -> Callable[[nn.Module], None]:
    def kill(model: nn.Module) -> None:
        for f in fns:
            f(model)
    return kill

"""Scores: how much each weight is worth keeping. One small file per method, registered by decorator.

A score function takes a :class:`Context` and returns ``{weight name: score tensor}`` (the weight's
shape; higher is kept first). ``needs_data`` methods read ``ctx.batch``; ``iterative`` methods prune in
rounds themselves and return scores for the final selection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ...registry import register

__all__ = ["Context", "Method", "SCORES", "score"]


@dataclass
class Context:
    model: nn.Module
    weights: dict[str, torch.Tensor]  # prunable weights by name (the parameters themselves)
    masks: dict[str, torch.Tensor]  # current 0/1 masks, bool
    sparsity: float  # the sparsity the selection will aim at
    select: Callable[[dict[str, torch.Tensor], float], dict[str, torch.Tensor]]  # scores, sparsity -> masks
    generator: torch.Generator
    input_shape: tuple[int, ...]
    batch: tuple[torch.Tensor, torch.Tensor] | None = None  # inputs, integer class targets
    rounds: int = 100  # for iterative methods
    log: Callable[[str], None] = field(default=lambda msg: None)


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable[[Context], dict[str, torch.Tensor]]
    needs_data: bool = False
    iterative: bool = False


SCORES: dict[str, Method] = {}


def score(name: str, needs_data: bool = False, iterative: bool = False) -> Callable:
    """Register a score function under ``name`` (a second registration of one name is an error)."""

    def deco(fn: Callable[[Context], dict[str, torch.Tensor]]) -> Callable:
        register(SCORES, name, Method(name, fn, needs_data, iterative), "score")
        return fn

    return deco


def masked_params(
    ctx: Context, transform: Callable[[torch.Tensor], torch.Tensor] | None = None, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Every parameter and buffer for ``torch.func.functional_call``: prunable weights masked, leaves that
    require grad, optionally transformed (``abs`` for SynFlow) and cast."""
    out = {}
    for name, t in list(ctx.model.named_parameters()) + list(ctx.model.named_buffers()):
        v = t.detach()
        if transform is not None and v.is_floating_point():
            v = transform(v)
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        if name in ctx.weights:
            v = v.clone().requires_grad_(True)
        out[name] = v
    return out


def apply_masks(params: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
    """The same dict with each prunable weight multiplied by its mask (the product stays differentiable)."""
    return {k: v * ctx.masks[k].to(v.dtype) if k in ctx.masks else v for k, v in params.items()}


from . import grasp, lamp, magnitude, random_, snip, synflow  # noqa: E402,F401  (they register themselves)

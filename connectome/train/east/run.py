"""What the training loop does for ``--method east`` beyond its policy: the budget adjusted for shared
weights, the check that every layer keeps a weight, and DyReLU's phasing step by step.

Example: ``east_sparsity(resnet34_cifar(share=2), 0.999)`` (see :func:`east_sparsity`).
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from ...io.masks import prunable_weights
from ..masked import TrainError
from .dyrelu import DyReLU, phase
from .schedules import adjusted_density, phase_beta, phasing_window

__all__ = ["weight_counts", "east_sparsity", "check_layers", "east_kwargs", "Phasing"]


def weight_counts(model: nn.Module) -> tuple[int, int]:
    """``(own, shared)``: the prunable weights a model owns, and those that its uses of shared tensors
    would have had of their own (each use after a tensor's first).

    >>> from connectome.resnet import resnet34_cifar   # blocks 2.. of each stage reuse block 1's 3x3 convs
    >>> weight_counts(resnet34_cifar(width=8, share=2))  # 2 * 9 * (8*8 + 2*16*16 + 4*32*32 + 64*64) shared
    (175192, 157824)
    """
    keys = prunable_weights(model)
    size = {id(p): p.numel() for n, p in model.named_parameters() if n in keys}  # each tensor once
    uses: dict[int, int] = {}
    for module in model.modules():
        w = getattr(module, "weight", None)
        if isinstance(w, torch.Tensor) and id(w) in size:
            uses[id(w)] = uses.get(id(w), 0) + 1
    return sum(size.values()), sum((count - 1) * size[i] for i, count in uses.items())


def east_sparsity(model: nn.Module, sparsity: float) -> float:
    """The sparsity of the weights a model owns that keeps the budget of ``sparsity`` over the weights it
    would have without sharing: ``1 - d (own + shared) / own``."""
    own, shared = weight_counts(model)
    if not shared:
        return sparsity
    density = adjusted_density(1.0 - sparsity, own, shared)
    if density >= 1.0:
        raise TrainError(
            f"--sparsity {sparsity:g} over the unshared weights is more than all {own:,} weights the shared "
            f"model owns: raise --sparsity or add --no-sharing"
        )
    return 1.0 - density


def check_layers(masks: dict[str, torch.Tensor], sparsity: float) -> None:
    """Refuse masks that leave a layer with no weight: such a network starts cut."""
    empty = [n for n, m in masks.items() if not bool(m.any())]
    if empty:
        raise TrainError(
            f"--sparsity {sparsity:g} leaves {len(empty)} layer(s) with no weight ({', '.join(empty[:3])}"
            f"{', ...' if len(empty) > 3 else ''}): lower --sparsity or use a wider model"
        )


def east_kwargs(model: str, kwargs: dict, dyrelu: bool = True, sharing: bool = True) -> dict:
    """The factory arguments of ``model`` (``connectome:NAME``) that give EAST's model: DyReLU activations
    and weight sharing (ratio 2 unless ``share`` is given).

    >>> sorted(east_kwargs("connectome:resnet34", {"width": 8}))
    ['act', 'share', 'width']
    """
    from ...models import MODELS

    out = dict(kwargs)
    if dyrelu or sharing:
        factory = MODELS.get(model.split(":", 1)[1]) if model.startswith("connectome:") else None
        accepts = inspect.signature(factory).parameters if factory is not None else {}
        if "act" not in accepts or "share" not in accepts:
            raise TrainError(
                f"--method east builds DyReLU and weight sharing into connectome's CIFAR ResNets "
                f"(connectome:resnet34, resnet50), not {model}: add --no-dyrelu --no-sharing for the "
                "cyclic density alone"
            )
    if dyrelu:
        out["act"] = DyReLU
    if sharing:
        out.setdefault("share", 2)
    return out


class Phasing:
    """DyReLU's ``beta`` during training: from 1 to 0 over ``cfg.phase_epochs`` (by default from half the
    first learning-rate milestone, at half of training, to it)."""

    def __init__(self, model: nn.Module, cfg, steps_per_epoch: int):
        self.model = model
        self.present = any(isinstance(m, DyReLU) for m in model.modules())
        self.window = cfg.phase_epochs or phasing_window(0.5 * cfg.epochs)
        self.steps_per_epoch = max(steps_per_epoch, 1)
        self.beta = math.nan
        self.done = False

    def step(self, step: int) -> bool:
        """Set ``beta`` for the coming optimiser step (``step`` steps done); True once, when it reaches 0."""
        if not self.present:
            return False
        beta = phase_beta(step / self.steps_per_epoch, *self.window)
        if beta != self.beta:
            phase(self.model, beta)
            self.beta = beta
        if beta == 0.0 and not self.done:
            self.done = True
            return True
        return False

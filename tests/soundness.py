"""The soundness property of DESIGN.md, for models the path-count oracle cannot model (norms, attention).

With every additive parameter zeroed (biases, norm shifts, BN running means, added position embeddings,
relative position biases), zeroing every weight that the analysis calls ineffective must leave the
model's outputs on random inputs unchanged. Class tokens, learned queries and scales stay as they are.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

ADDITIVE = ("bias", "running_mean", "pos_embedding", "relative_position_bias_table", "relative_position_bias",
            "pos_embed", "position_embedding")


def zero_additive(model: nn.Module) -> nn.Module:
    """A copy of the model with every additive parameter and buffer set to zero (eval mode)."""
    m = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, t in list(m.named_parameters()) + list(m.named_buffers()):
            if any(a in name for a in ADDITIVE) and t.is_floating_point():
                t.zero_()
    return m


def fill_zero_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give random values to weights initialised to all zeros (ViT's head), so the graph is connected."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    m = copy.deepcopy(model)
    params = dict(m.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask.to(params[name].dtype))
    return m


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    return out if isinstance(out, torch.Tensor) else out[0]

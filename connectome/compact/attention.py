"""``nn.MultiheadAttention`` opened up, so that its projections can be sliced like any linear layer.

``nn.MultiheadAttention`` keeps its query, key and value projections in one ``in_proj_weight`` and runs
as one opaque call: a dead row of a projection could not be removed. :class:`SplitAttention` computes the
same function from four ``nn.Linear`` layers (``q``, ``k``, ``v``, ``out``) and
``scaled_dot_product_attention``; traced, its projections are layers of their own. Tokens are split into
heads by the head's width, not by the count of heads, so a head can go whole (each head is one class of
channels: :func:`connectome.compact.heads.attention_heads`); in a head that stays, a dead row of a projection
is no longer computed: its channel holds its constant (:mod:`connectome.compact.edits`).

Examples
--------
>>> import torch
>>> mha = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
>>> x = torch.randn(1, 5, 8)
>>> split = SplitAttention.of(mha)
>>> torch.allclose(split(x, x, x, need_weights=False)[0], mha(x, x, x, need_weights=False)[0], atol=1e-6)
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SplitAttention", "open_attention", "replace_modules"]


class SplitAttention(nn.Module):
    """Batch-first multi-head attention from four linear layers (no masks, no attention weights)."""

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        # as built; a compacted copy may have fewer heads (its traced graph splits by head_dim)
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.q, self.k, self.v = (
            nn.Linear(embed_dim, embed_dim),
            nn.Linear(embed_dim, embed_dim),
            nn.Linear(embed_dim, embed_dim),
        )
        self.out = nn.Linear(embed_dim, embed_dim)

    @staticmethod
    def of(mha: nn.MultiheadAttention) -> SplitAttention:
        """The same attention as ``mha`` (batch first, one embedding width, biases as ``mha`` has them)."""
        e = mha.embed_dim
        w_in, w_out = _current(mha, "in_proj_weight"), _current(mha.out_proj, "weight")
        split = SplitAttention(e, mha.num_heads).to(w_in.dtype)
        with torch.no_grad():
            for i, lin in enumerate((split.q, split.k, split.v)):
                lin.weight.copy_(w_in[i * e : (i + 1) * e])
                if mha.in_proj_bias is not None:
                    lin.bias.copy_(mha.in_proj_bias[i * e : (i + 1) * e])
                else:
                    lin.bias.zero_()
            split.out.weight.copy_(w_out)
            if mha.out_proj.bias is not None:
                split.out.bias.copy_(mha.out_proj.bias)
            else:
                split.out.bias.zero_()
        _carry_prune_masks(mha, split)
        return split.train(mha.training)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None, **kw):
        if key_padding_mask is not None or attn_mask is not None or need_weights:
            raise ValueError("SplitAttention computes no masks and no attention weights")
        d = self.head_dim  # heads by their width, not their count: the compaction may remove whole heads
        q, k, v = (x.unflatten(-1, (-1, d)).transpose(1, 2) for x in (self.q(query), self.k(key), self.v(value)))
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).flatten(2)), None


def _current(mod: nn.Module, name: str) -> torch.Tensor:
    """A weight as its next call computes it: a pruned one is refreshed only by its module's call, and
    ``nn.MultiheadAttention`` never calls its ``out_proj``."""
    orig, mask = getattr(mod, name + "_orig", None), getattr(mod, name + "_mask", None)
    return orig * mask if orig is not None and mask is not None else getattr(mod, name)


def _carry_prune_masks(mha: nn.MultiheadAttention, split: SplitAttention) -> None:
    """``torch.nn.utils.prune`` masks of ``mha`` (packed ``in_proj_weight``, ``out_proj.weight``) put on the
    split layers, so that the compaction carries them over like any layer's."""
    from torch.nn.utils import prune

    e = mha.embed_dim
    packed = getattr(mha, "in_proj_weight_mask", None)
    if packed is not None:
        for i, lin in enumerate((split.q, split.k, split.v)):
            prune.custom_from_mask(lin, "weight", packed[i * e : (i + 1) * e])
    out = getattr(mha.out_proj, "weight_mask", None)
    if out is not None:
        prune.custom_from_mask(split.out, "weight", out)


def open_attention(model: nn.Module) -> int:
    """Replace, in place, every ``nn.MultiheadAttention`` that :class:`SplitAttention` computes alike
    (batch first, query, key and value of one width, no bias_k/bias_v, no dropout in eval); how many."""
    return replace_modules(model, lambda m: isinstance(m, nn.MultiheadAttention) and _plain(m), SplitAttention.of)


def replace_modules(model: nn.Module, match: Callable[[nn.Module], bool], make: Callable[[Any], nn.Module]) -> int:
    """Replace, in place, every submodule that ``match`` accepts by ``make(submodule)``; how many."""
    swapped = 0
    for name, mod in list(model.named_modules()):
        if match(mod):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, make(mod))
            swapped += 1
    return swapped


def _plain(mha: nn.MultiheadAttention) -> bool:
    return bool(
        mha.batch_first
        and mha._qkv_same_embed_dim
        and mha.bias_k is None
        and mha.bias_v is None
        and not mha.add_zero_attn
    )

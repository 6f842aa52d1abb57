"""Swin's shifted-window attention opened up, so that its projections are layers the compaction slices.

torchvision's ``ShiftedWindowAttention`` hands its ``qkv`` and ``proj`` weights to one function that does
everything (pad, shift, window partition, attention, reverse): traced, the projections are arguments of
an opaque call, and a dead row of ``qkv`` could not be removed. :class:`WindowAttention` computes the same
function with ``self.qkv`` and ``self.proj`` called as modules between three small traced-as-one
functions: :func:`window_partition` and :func:`window_merge` only move elements (the analysis reads them as
index maps), :func:`shift_mask` depends on sizes only. Parameter names stay those of the original module,
so masks carry over by name. Swin V2 (cosine attention) is opened too, for inference: its position
bias, a small MLP of constants, becomes a buffer computed once (open a float64 copy for a float64
result), and its key bias, which V2 ignores, is zeroed in the copy.

Examples
--------
>>> import torch
>>> from torchvision.models.swin_transformer import ShiftedWindowAttention
>>> attn = ShiftedWindowAttention(8, [4, 4], [2, 2], 2).eval()
>>> x = torch.randn(1, 6, 6, 8)
>>> torch.allclose(WindowAttention.of(attn)(x), attn(x), atol=1e-6)
True
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from .attention import replace_modules

__all__ = ["WindowAttention", "window_partition", "window_merge", "shift_mask", "open_windows", "is_window_attention"]

_SWIN = "torchvision.models.swin_transformer"


def _geometry(h: int, w: int, window: list[int], shift: list[int]) -> tuple[int, int, list[int]]:
    """Padded height and width, and the shift as Swin applies it (none along a side one window covers)."""
    ph, pw = h + (-h) % window[0], w + (-w) % window[1]
    return ph, pw, [0 if window[0] >= ph else shift[0], 0 if window[1] >= pw else shift[1]]


def window_partition(x: torch.Tensor, window: list[int], shift: list[int]) -> torch.Tensor:
    """(B, H, W, C) -> (B, windows, tokens per window, C): zero-padded to whole windows, rolled by the shift.

    >>> window_partition(torch.zeros(2, 5, 6, 3), [4, 4], [0, 0]).shape
    torch.Size([2, 4, 16, 3])
    """
    b, h, w, c = x.shape
    ph, pw, s = _geometry(h, w, window, shift)
    x = F.pad(x, (0, 0, 0, pw - w, 0, ph - h))
    if sum(s) > 0:
        x = torch.roll(x, shifts=(-s[0], -s[1]), dims=(1, 2))
    x = x.view(b, ph // window[0], window[0], pw // window[1], window[1], c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, -1, window[0] * window[1], c)


def window_merge(y: torch.Tensor, h: int, w: int, window: list[int], shift: list[int]) -> torch.Tensor:
    """The inverse of :func:`window_partition`: (B, windows, tokens, C) -> (B, h, w, C).

    >>> x = torch.randn(1, 5, 6, 3)
    >>> torch.equal(window_merge(window_partition(x, [4, 4], [2, 2]), 5, 6, [4, 4], [2, 2]), x)
    True
    """
    ph, pw, s = _geometry(h, w, window, shift)
    b, c = y.shape[0], y.shape[-1]
    y = y.view(b, ph // window[0], pw // window[1], window[0], window[1], c)
    y = y.permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c)
    if sum(s) > 0:
        y = torch.roll(y, shifts=(s[0], s[1]), dims=(1, 2))
    return y[:, :h, :w, :].contiguous()


def shift_mask(h: int, w: int, window: list[int], shift: list[int], like: torch.Tensor) -> torch.Tensor:
    """The additive mask (windows, 1, tokens, tokens) that keeps shifted windows from mixing regions that
    are not neighbours in the image: -100 between tokens of different regions, as Swin uses (zeros when
    there is no shift). ``like`` gives the dtype and device; its values are not read.

    >>> shift_mask(8, 8, [4, 4], [2, 2], torch.zeros(1)).shape
    torch.Size([4, 1, 16, 16])
    """
    ph, pw, s = _geometry(h, w, window, shift)
    n = window[0] * window[1]
    windows = (ph // window[0]) * (pw // window[1])
    if sum(s) == 0:
        return like.new_zeros((windows, 1, n, n))
    region = like.new_zeros((ph, pw))
    cuts = [((0, -win), (-win, -sh), (-sh, None)) for win, sh in zip(window, s)]
    for i, (h0, h1) in enumerate(cuts[0]):
        for j, (w0, w1) in enumerate(cuts[1]):
            region[h0:h1, w0:w1] = 3 * i + j
    region = region.view(ph // window[0], window[0], pw // window[1], window[1]).permute(0, 2, 1, 3)
    region = region.reshape(windows, n)
    same = region.unsqueeze(1) == region.unsqueeze(2)
    return torch.where(same, 0.0, -100.0).to(like.dtype).unsqueeze(1)


for _fn in ("window_partition", "window_merge", "shift_mask"):
    fx.wrap(_fn)  # traced as one call each: their control flow depends on the input's size


class WindowAttention(nn.Module):
    """Swin (V1 or V2) window attention with ``qkv`` and ``proj`` called as ``nn.Linear`` modules."""

    qkv: nn.Linear
    proj: nn.Linear
    position_bias: torch.Tensor
    relative_position_bias_table: torch.Tensor
    relative_position_index: torch.Tensor
    logit_scale: torch.Tensor

    def __init__(self, src: Any):
        super().__init__()
        self.window_size: list[int] = list(src.window_size)
        self.shift_size: list[int] = list(src.shift_size)
        self.num_heads: int = src.num_heads
        self.attention_dropout: float = src.attention_dropout
        self.dropout: float = src.dropout
        self.qkv, self.proj = src.qkv, src.proj
        self.v2 = hasattr(src, "logit_scale")
        if self.v2:  # V2's bias is an MLP of constants: computed once, in the module's dtype
            self.logit_scale = src.logit_scale
            with torch.no_grad():
                self.register_buffer("position_bias", src.get_relative_position_bias()[0].detach().clone())
        else:
            self.relative_position_bias_table = src.relative_position_bias_table
            self.register_buffer("relative_position_index", src.relative_position_index)

    @staticmethod
    def of(src: Any) -> WindowAttention:
        """The same attention as torchvision's ``ShiftedWindowAttention`` (or V2) ``src``, on copies of its
        parameters."""
        import copy

        src = copy.deepcopy(src)
        if hasattr(src, "logit_scale") and src.qkv.bias is not None:  # V2 computes without the key bias
            bias = getattr(src.qkv, "bias_orig", src.qkv.bias)  # a pruned bias: what its hook multiplies
            with torch.no_grad():
                n = bias.numel() // 3
                bias[n : 2 * n] = 0
        return WindowAttention(src).train(src.training)

    def _bias(self) -> torch.Tensor:
        n = self.window_size[0] * self.window_size[1]
        if self.v2:
            return self.position_bias
        return self.relative_position_bias_table[self.relative_position_index].view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1], x.shape[2]
        windows = window_partition(x, self.window_size, self.shift_size)
        qkv = self.qkv(windows).unflatten(-1, (3, self.num_heads, -1))  # (B, windows, N, 3, heads, d)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (B, windows, heads, N, d)
        bias = self._bias()
        mask = bias + shift_mask(h, w, self.window_size, self.shift_size, bias)  # from sizes: a constant
        scale = None
        if self.v2:
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
            q = q * torch.clamp(self.logit_scale, max=math.log(100.0)).exp().to(q.dtype)
            scale = 1.0
        p = self.attention_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype), dropout_p=p, scale=scale)
        y = self.proj(y.transpose(-2, -3).flatten(-2))
        y = F.dropout(y, self.dropout, self.training)
        return window_merge(y, h, w, self.window_size, self.shift_size)


def is_window_attention(m: nn.Module) -> bool:
    return type(m).__module__ == _SWIN and type(m).__name__ in ("ShiftedWindowAttention", "ShiftedWindowAttentionV2")


def open_windows(model: nn.Module) -> int:
    """Replace, in place, every torchvision Swin window attention by a :class:`WindowAttention`; how many."""
    return replace_modules(model, is_window_attention, WindowAttention.of)

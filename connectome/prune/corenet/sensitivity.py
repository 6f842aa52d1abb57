"""Empirical sensitivity (CoreNet, Baykal et al., ICLR 2019): how much of a neuron's pre-activation one
incoming weight can carry, at most, over a sample of inputs.

A neuron's incoming weights are split by sign and each set is treated on its own. Within a set ``W``
(weights of one sign, taken as magnitudes), the share of weight ``j`` on input ``x`` is
``g_j(x) = |w_j| a_j(x) / sum_{k in W} |w_k| a_k(x)``, and its sensitivity is ``s_j = max_x g_j(x)``:
every share lies in [0, 1], and the shares of one input add up to 1 (or are all 0, when no weight
of the set sees a nonzero input: 0/0 counts as 0).

Activations are used as absolute values. Behind a ReLU they are nonnegative already, and the
definition is the paper's; the first layer reads the data itself, which is signed after
standardisation, and there ``|w_j a_j(x)|`` is the contribution (the paper's definition whenever the
inputs are nonnegative).

Since ``|w_j|`` does not depend on ``x``, ``s_j = |w_j| max_x a_j(x) r(x)`` with ``r(x)`` the inverse
of the set's sum: a max-product of two small matrices, accumulated over chunks of inputs so that the
memory stays bounded whatever the sample size. A convolution's incoming weights are its kernel
entries and its inputs are the patches (im2col), so the max runs over inputs *and* positions.

Example: ``sensitivities(torch.nn.Linear(4, 2).weight, [torch.rand(8, 4)])`` (see :func:`sensitivities`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Accumulator", "sensitivities", "conv_patches"]

_CHUNK_BYTES = 32 << 20  # one (inputs x outputs x inputs-per-neuron) block of the max-product
_BIG = 1 << 16  # weights per layer (group) above which the max-product runs one input row at a time


class Accumulator:
    """The running max of ``g_j(x)`` for a 2-D weight (outputs x inputs-per-neuron) over added inputs."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype = torch.float32):
        w = weight.detach().to(dtype)
        self.pos, self.neg = w.clamp(min=0), (-w).clamp(min=0)
        self.top_pos = torch.zeros_like(w)  # max over x of a_j(x) / (sum over the positive set)
        self.top_neg = torch.zeros_like(w)
        self.seen = 0

    def add(self, a: torch.Tensor) -> None:
        """Inputs ``a`` (rows x inputs-per-neuron), one row per input (per patch for a convolution)."""
        a = a.detach().to(self.pos.dtype).abs()
        if a.numel() == 0:
            return
        out, width = self.pos.shape
        for w, top in ((self.pos, self.top_pos), (self.neg, self.top_neg)):
            total = a @ w.T  # (rows, out): each neuron's sum over its set
            inv = torch.where(total > 0, 1.0 / total.clamp(min=torch.finfo(total.dtype).tiny), 0.0)
            if out * width >= _BIG:  # a large layer: one row at a time stays in cache
                buf = torch.empty_like(top)
                for r in range(a.shape[0]):
                    torch.mul(inv[r][:, None], a[r][None, :], out=buf)
                    torch.maximum(top, buf, out=top)
                continue
            rows = max(1, _CHUNK_BYTES // max(1, out * width * a.element_size()))
            for start in range(0, a.shape[0], rows):  # many rows of a small layer (patches): in blocks
                part, scale = a[start : start + rows], inv[start : start + rows]
                torch.maximum(top, (scale.T[:, :, None] * part[None, :, :]).amax(1), out=top)
        self.seen += a.shape[0]

    def result(self) -> torch.Tensor:
        """``s`` (the weight's 2-D shape): each entry's sensitivity within its sign set, in [0, 1]."""
        return (self.pos * self.top_pos + self.neg * self.top_neg).clamp(max=1.0).double()


def sensitivities(weight: torch.Tensor, inputs: Iterable[torch.Tensor]) -> torch.Tensor:
    """Sensitivities of a linear layer's ``weight`` (outputs x inputs) over batches of its inputs.

    >>> w = torch.tensor([[1.0, 2.0, -1.0]])
    >>> sensitivities(w, [torch.tensor([[1.0, 1.0, 1.0], [3.0, 0.0, 2.0]])])  # shares 1/3, 2/3 | 1
    tensor([[1.0000, 0.6667, 1.0000]], dtype=torch.float64)
    """
    acc = Accumulator(weight)
    for a in inputs:
        acc.add(a.reshape(-1, weight.shape[1]))
    return acc.result()


def conv_patches(conv: nn.Conv2d, x: torch.Tensor, group: int) -> torch.Tensor:
    """The patches that ``conv``'s kernels of ``group`` read from input ``x``: (inputs x positions, in/g*kh*kw)."""
    per = conv.in_channels // conv.groups
    xg = x[:, group * per : (group + 1) * per]
    padding: int | tuple[int, ...]
    if conv.padding_mode != "zeros" and any(conv._reversed_padding_repeated_twice):
        xg = F.pad(xg, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = 0
    elif isinstance(conv.padding, str):  # "same" / "valid": unfold takes numbers
        padding = _same_padding(conv) if conv.padding == "same" else 0
    else:
        padding = tuple(conv.padding)
    cols = F.unfold(xg, conv.kernel_size, dilation=conv.dilation, padding=padding, stride=conv.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _same_padding(conv: nn.Conv2d) -> tuple[int, int]:
    pads = []
    for k, d in zip(conv.kernel_size, conv.dilation):
        total = d * (k - 1)
        if total % 2:
            raise ValueError("padding='same' with an even kernel pads unevenly: not supported by CoreNet")
        pads.append(total // 2)
    return pads[0], pads[1]

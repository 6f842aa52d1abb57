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
of the set's sum: a max-product of two small matrices (:mod:`.kernel`), accumulated over chunks of
inputs so that the memory stays bounded whatever the sample size. A convolution's incoming weights are its kernel
entries and its inputs are the patches (im2col), so the max runs over inputs *and* positions.

Example: ``sensitivities(torch.nn.Linear(4, 2).weight, [torch.rand(8, 4)])`` (see :func:`sensitivities`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .kernel import max_product, sensitivity_of

__all__ = ["Accumulator", "sensitivities", "conv_patches"]

_CAP = 1e6  # Delta where a neuron's positive and negative parts cancel exactly: large, not infinite


class Accumulator:
    """The running max of ``g_j(x)`` for a 2-D weight (outputs x inputs-per-neuron) over added inputs,
    and the running sum of each neuron's ``Delta_i(x)`` (the paper's measure of how much its positive
    and negative parts cancel: the sum of ``|w a|`` over the pre-activation's magnitude)."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype = torch.float32, deltas: bool = True):
        w = weight.detach().to(dtype)
        self.deltas = deltas  # whether to sum Delta_i(x) (only the paper's error split needs it)
        self.weight, self.positive = w, w > 0
        self.both = w.new_empty(2 * w.shape[0], w.shape[1])  # both sign sets, as magnitudes
        torch.clamp(w, min=0, out=self.both[: w.shape[0]])
        torch.clamp(w, max=0, out=self.both[w.shape[0] :]).neg_()
        self.top = torch.zeros_like(w)  # max over x of a_j(x) / (the sum over weight j's sign set)
        self.delta_sum = torch.zeros(w.shape[0], dtype=torch.float64)
        self.seen = 0

    def add(self, a: torch.Tensor, nonnegative: bool | None = None) -> None:
        """Inputs ``a`` (rows x inputs-per-neuron), one row per input (per patch for a convolution);
        ``nonnegative``: whether no entry of ``a`` is negative, when the caller knows."""
        signed = a.detach().to(self.weight.dtype)
        if signed.numel() == 0:
            return
        if nonnegative is None:
            nonnegative = bool((signed >= 0).all())
        a = signed if nonnegative else signed.abs()
        out = self.weight.shape[0]
        totals = a @ self.both.T  # (rows, 2 out): each neuron's sum over each sign set, never negative
        max_product(self.top, a, totals, self.positive)
        self.seen += a.shape[0]
        if not self.deltas:
            return
        mass = totals[:, :out] + totals[:, out:]
        net = (totals[:, :out] - totals[:, out:] if nonnegative else signed @ self.weight.T).abs()
        # mass / net, capped; where both are 0 the neuron sees nothing of the set and Delta is 1
        d = (mass / net).nan_to_num_(nan=1.0, posinf=_CAP).clamp_(max=_CAP)
        self.delta_sum += d.sum(0, dtype=torch.float64)

    def result(self) -> torch.Tensor:
        """``s`` (the weight's 2-D shape): each entry's sensitivity within its sign set, in [0, 1]."""
        # a zero weight belongs to no set: its entry of top is meaningless (even infinite), its sensitivity 0
        return sensitivity_of(self.weight, self.top)


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

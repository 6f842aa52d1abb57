"""Checks and figures for a compaction: outputs compared in float64, parameters, FLOPs, CPU latency.

Examples
--------
>>> import torch
>>> m = torch.nn.Linear(4, 2)
>>> params(m), flops(m, (torch.zeros(1, 4),))
(10, 16)
>>> max_error(m, m, [(torch.ones(1, 4),)])
0.0
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["params", "flops", "latency", "max_error", "random_inputs"]


def params(model: nn.Module) -> int:
    """Parameters, each tensor once (a prune-form weight counts as its ``weight_orig``)."""
    return sum(p.numel() for p in model.parameters())


def flops(model: nn.Module, inputs: tuple) -> int:
    """FLOPs of one call, by torch's flop counter. ``nn.MultiheadAttention``'s fused kernel is invisible
    to that counter: it is counted as its four projections and attention (a copy, opened up)."""
    from torch.utils.flop_counter import FlopCounterMode

    from .attention import open_attention
    from .plan import clone

    if any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        model = clone(model)
        open_attention(model)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*inputs)
    return int(counter.get_total_flops())


def latency(model: nn.Module, inputs: tuple, runs: int = 20, warmup: int = 3) -> float:
    """Median seconds of one call on the CPU (after ``warmup`` calls)."""
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            start = time.perf_counter()
            model(*inputs)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def _flat(v: Any) -> list[torch.Tensor]:
    if isinstance(v, torch.Tensor):
        return [v]
    if isinstance(v, dict):
        return [t for x in v.values() for t in _flat(x)]
    if isinstance(v, (tuple, list)):
        return [t for x in v for t in _flat(x)]
    return []


def max_error(a: nn.Module, b: nn.Module, inputs: Sequence[tuple]) -> float:
    """The largest relative difference between the outputs of ``a`` and ``b`` over ``inputs``: per output
    tensor, max |a - b| over max |a| (0 when both are zero)."""
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            for ya, yb in zip(_flat(a(*x)), _flat(b(*x)), strict=True):
                if ya.shape != yb.shape:
                    return float("inf")
                diff = float((ya.double() - yb.double()).abs().max()) if ya.numel() else 0.0
                scale = float(ya.double().abs().max()) if ya.numel() else 0.0
                worst = max(worst, diff / scale if scale else (0.0 if diff == 0 else float("inf")))
    return worst


def random_inputs(like: tuple, n: int, seed: int = 0, high: int = 2) -> list[tuple]:
    """``n`` random input tuples shaped as ``like``: normal floats (float64), integers below ``high``."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        xs = []
        for t in like:
            if t.is_floating_point():
                xs.append(torch.randn(t.shape, generator=gen, dtype=torch.float64))
            elif t.dtype == torch.bool:
                xs.append(copy.deepcopy(t))
            else:
                xs.append(torch.randint(0, high, t.shape, generator=gen, dtype=t.dtype))
        out.append(tuple(xs))
    return out

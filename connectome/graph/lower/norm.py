"""Normalisations and softmax.

BatchNorm in eval mode is a per-channel affine map: a channel passes unless its scale is zero. The
others couple elements through statistics: GroupNorm mixes the channels of a group, LayerNorm the
normalised dims, InstanceNorm the positions of a channel, softmax its dim. Where elements are mixed,
an output is alive if any element it is normalised with is alive (sound, as DESIGN.md requires).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..status import Status
from .base import Ctx, Op, rule

aten = torch.ops.aten

__all__ = ["Mix"]


class Mix(Op):
    """Elements are mixed along ``dims``; ``groups`` splits the channel dim into independent groups.

    ``cut`` (bool per channel) marks channels whose output is a constant (zero affine scale).
    """

    couples = True

    def __init__(
        self,
        shape: tuple,
        cdim: int,
        dims: tuple[int, ...],
        groups: int = 1,
        cut: np.ndarray | None = None,
        zero: bool | None = True,
        n_out: int = 1,
        cut_full=None,
    ):
        self.shape, self.cdim, self.dims, self.groups = shape, cdim, dims, groups
        self.cut, self.zero, self.n_out, self.cut_full = cut, zero, n_out, cut_full
        self.out_cdim = cdim

    def _mix(self, s: Status) -> Status:
        s = s.with_cdim(self.cdim)
        pos_dims = tuple(d for d in self.dims if d != self.cdim)
        if self.cdim in self.dims:  # channels mix (within groups)
            full = s.full()
            c = self.shape[self.cdim]
            g = np.moveaxis(full, self.cdim, 0).reshape(
                (self.groups, c // self.groups) + full.shape[: self.cdim] + full.shape[self.cdim + 1 :]
            )
            g = np.asarray(g.any(axis=1, keepdims=True))
            if pos_dims:
                axes = tuple(2 + (d if d < self.cdim else d - 1) for d in pos_dims)
                g = np.asarray(g.any(axis=axes, keepdims=True))
            g = np.broadcast_to(
                g, (self.groups, c // self.groups) + full.shape[: self.cdim] + full.shape[self.cdim + 1 :]
            )
            full = np.moveaxis(g.reshape((c,) + g.shape[2:]), 0, self.cdim)
            return Status.from_full(full, self.cdim)
        if pos_dims:  # positions mix within each channel: a pattern becomes its any() over those dims
            pshape = s.pos_shape
            axes = tuple(1 + (d if d < self.cdim else d - 1) for d in pos_dims)
            t = s.table.reshape((len(s.table),) + pshape).any(axis=axes, keepdims=True)
            t = np.broadcast_to(t, (len(s.table),) + pshape).reshape(len(s.table), int(np.prod(pshape)))
            return Status.from_table(t, s.idx, s.shape, s.cdim)
        return s

    def _cut(self, s: Status) -> Status:
        if self.cut is not None and self.cut.any():
            idx = s.idx.copy()
            idx[self.cut] = -1
            s = Status(s.shape, s.cdim, s.table, idx, s.zero)
        if self.cut_full is not None and self.cut_full.any():
            s = Status.from_full(s.full() & ~np.broadcast_to(self.cut_full, s.shape), s.cdim)
        return s

    def _identity(self) -> bool:
        """Per-channel and nothing cut (BatchNorm in eval mode): the status passes unchanged."""
        return not self.dims and (self.cut is None or not self.cut.any()) and self.cut_full is None and self.n_out == 1

    def forward(self, ins: list[Status]) -> Any:
        # a dead output element is the norm of a wholly dead group: zero when the dead inputs are (norms of
        # zeros are zero once shifts are), a constant otherwise (a class token's row, before attention mixes
        # it); where mixing leaves no dead group, the only dead outputs are cut channels, which are zero
        if self._identity():
            return ins[0].with_zero(ins[0].zero if self.zero is None else self.zero and ins[0].zero)
        mixed = self._mix(ins[0])
        zero = ins[0].zero if self.zero is None else self.zero and (ins[0].zero or mixed.is_full())
        out = self._cut(mixed).with_zero(zero)
        return (
            out
            if self.n_out == 1
            else (out,) + tuple(Status.uniform(self.shape, self.cdim, False) for _ in range(self.n_out - 1))
        )

    def backward(self, ins: list[Status], out: Any, grad: Any) -> list[Status | None]:
        g = grad if self.n_out == 1 else grad[0]
        if g is None:
            return [None]
        if self._identity():
            return [g]
        return [self._mix(self._cut(g.with_cdim(self.cdim)))]


def _zero_scale(w: Any) -> np.ndarray | None:
    if isinstance(w, torch.Tensor) and w.device.type != "meta":
        from ...io.masks import nonzero  # here: connectome.io.masks imports this package

        return nonzero(w).cpu().numpy().reshape(-1) == 0  # numpy's read: small torch ops cost ~10 us each
    return None


def _param(ctx: Ctx, arg: Any) -> torch.Tensor | None:
    name = ctx.traced.attr_name(arg)
    return ctx.traced.attr(name) if name else None


def _n_out(ctx: Ctx) -> int:
    return len(ctx.out) if isinstance(ctx.out, (tuple, list)) else 1


def _shape(ctx: Ctx) -> tuple:
    return ctx.shape(ctx.tensor_args[0])


@rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LazyBatchNorm1d, nn.LazyBatchNorm2d)
def batch_norm_module(ctx: Ctx) -> Op:
    m = ctx.module
    shape = _shape(ctx)
    cut = _zero_scale(m.weight) if m.affine else None
    batch_stats = not m.track_running_stats or m.running_mean is None
    dims = tuple(d for d in range(len(shape)) if d != 1) if batch_stats else ()
    return Mix(shape, 1, dims, cut=cut)


@rule(
    F.batch_norm,
    aten.batch_norm,
    aten._native_batch_norm_legit_no_training,
    aten._native_batch_norm_legit,
    aten.native_batch_norm,
    aten._native_batch_norm_legit_functional,
    aten.cudnn_batch_norm,
    aten.miopen_batch_norm,
)
def batch_norm_function(ctx: Ctx) -> Op:
    shape = _shape(ctx)
    if ctx.node.target is F.batch_norm:  # (input, running_mean, running_var, weight, bias, training, ...)
        w, running, training = ctx.arg(3, "weight"), ctx.arg(1, "running_mean"), ctx.arg(5, "training", False)
    else:  # ATen: (input, weight, bias, running_mean, running_var, [training], ...)
        w, running = ctx.arg(1, "weight"), ctx.arg(3, "running_mean")
        training = False if "no_training" in str(ctx.node.target) else ctx.arg(5, "training", False)
    batch_stats = running is None or training is True
    dims = tuple(d for d in range(len(shape)) if d != 1) if batch_stats else ()
    return Mix(shape, 1, dims, cut=_zero_scale(_param(ctx, w)), n_out=_n_out(ctx))


@rule(F.instance_norm, aten.instance_norm)
def instance_norm_function(ctx: Ctx) -> Op:
    shape = _shape(ctx)
    w = ctx.arg(3, "weight") if ctx.node.target is F.instance_norm else ctx.arg(1, "weight")
    return Mix(shape, 1, (0,) + tuple(range(2, len(shape))), cut=_zero_scale(_param(ctx, w)), n_out=_n_out(ctx))


@rule(nn.GroupNorm)
def group_norm_module(ctx: Ctx) -> Op:
    m: Any = ctx.module
    shape = _shape(ctx)
    return Mix(shape, 1, tuple(range(len(shape))), m.num_groups, cut=_zero_scale(m.weight) if m.affine else None)


@rule(F.group_norm, aten.group_norm, aten.native_group_norm)
def group_norm_function(ctx: Ctx) -> Op:
    shape = _shape(ctx)
    native = "native" in str(ctx.node.target)
    groups = ctx.arg(6 if native else 1, "group" if native else "num_groups")
    w = _param(ctx, ctx.arg(1 if native else 2, "weight"))
    return Mix(shape, 1, tuple(range(len(shape))), int(groups), cut=_zero_scale(w), n_out=_n_out(ctx))


@rule(nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
def instance_norm_module(ctx: Ctx) -> Op:
    m = ctx.module
    shape = _shape(ctx)
    if m.track_running_stats and m.running_mean is not None:
        return Mix(shape, 1, (), cut=_zero_scale(m.weight) if m.affine else None)
    return Mix(shape, 1, (0,) + tuple(range(2, len(shape))), cut=_zero_scale(m.weight) if m.affine else None)


def _layer_norm(ctx: Ctx, normalized: Any, weight: Any) -> Op:
    shape = _shape(ctx)
    k = len(normalized) if isinstance(normalized, (list, tuple)) else 1
    dims = tuple(range(len(shape) - k, len(shape)))
    cut_full = None
    if isinstance(weight, torch.Tensor) and weight.device.type != "meta":
        cut_full = (weight.detach() == 0).cpu().numpy()
    return Mix(shape, len(shape) - 1, dims, cut_full=cut_full, n_out=_n_out(ctx))


@rule(nn.LayerNorm, nn.RMSNorm) if hasattr(nn, "RMSNorm") else rule(nn.LayerNorm)
def layer_norm_module(ctx: Ctx) -> Op:
    m = ctx.module
    return _layer_norm(ctx, m.normalized_shape, getattr(m, "weight", None))


@rule(
    F.layer_norm,
    aten.layer_norm,
    aten.native_layer_norm,
    *([F.rms_norm, aten.rms_norm] if hasattr(F, "rms_norm") and hasattr(aten, "rms_norm") else []),
)
def layer_norm_function(ctx: Ctx) -> Op:
    return _layer_norm(ctx, ctx.arg(1, "normalized_shape"), _param(ctx, ctx.arg(2, "weight")))


@rule(nn.LocalResponseNorm, F.local_response_norm)
def local_response_norm(ctx: Ctx) -> Op:
    shape = _shape(ctx)  # mixes neighbouring channels; all channels is a sound superset
    return Mix(shape, 1, (1,))


def _dim_of(ctx: Ctx, default: int = -1) -> int:
    d = ctx.arg(1, "dim", None)
    if ctx.node.op == "call_module":
        d = getattr(ctx.module, "dim", None)
    shape = _shape(ctx)
    return (d if isinstance(d, int) else default) % max(len(shape), 1)


@rule(
    nn.Softmax,
    nn.LogSoftmax,
    nn.Softmin,
    nn.Softmax2d,
    F.softmax,
    F.log_softmax,
    F.softmin,
    torch.softmax,
    torch.log_softmax,
    ".softmax",
    ".log_softmax",
    aten.softmax,
    aten._softmax,
    aten.log_softmax,
    aten._log_softmax,
    aten._safe_softmax,
)
def softmax(ctx: Ctx) -> Op:
    shape = _shape(ctx)
    d = 1 if ctx.node.op == "call_module" and isinstance(ctx.module, nn.Softmax2d) else _dim_of(ctx)
    return Mix(shape, d, (d,), zero=False)


@rule(F.normalize, nn.CosineSimilarity, F.cosine_similarity)
def normalize(ctx: Ctx) -> Op:
    shape = _shape(ctx)
    d = ctx.arg(2, "dim", 1)
    d = (d if isinstance(d, int) else 1) % max(len(shape), 1)
    return Mix(shape, d, (d,))

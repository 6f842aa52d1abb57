"""Data movement: view, reshape, flatten, permute, transpose, cat, stack, split, chunk, getitem, pad, shuffles.

These ops only move values, so each is an exact index map from input elements to output elements, read
off the op itself by :func:`~connectome.graph.lower.indexmap.index_map_op` (see :mod:`.indexmap`). This
module holds the rules: which ops are such maps, and indexing by a constant index tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Ctx, Op, rule
from .fallback import Fallback
from .indexmap import index_map_op

aten = torch.ops.aten

__all__ = ["structural", "indexing"]


_MODULES = (
    nn.Flatten,
    nn.Unflatten,
    nn.ZeroPad1d,
    nn.ZeroPad2d,
    nn.ZeroPad3d,
    nn.ConstantPad1d,
    nn.ConstantPad2d,
    nn.ConstantPad3d,
    nn.ReflectionPad1d,
    nn.ReflectionPad2d,
    nn.ReflectionPad3d,
    nn.ReplicationPad1d,
    nn.ReplicationPad2d,
    nn.ReplicationPad3d,
    nn.CircularPad1d,
    nn.CircularPad2d,
    nn.CircularPad3d,
    nn.ChannelShuffle,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    nn.Unfold,
)
_FUNCS = (
    torch.flatten,
    torch.reshape,
    torch.permute,
    torch.transpose,
    torch.swapaxes,
    torch.swapdims,
    torch.t,
    torch.squeeze,
    torch.unsqueeze,
    torch.cat,
    torch.concat,
    torch.concatenate,
    torch.stack,
    torch.hstack,
    torch.vstack,
    torch.split,
    torch.chunk,
    torch.tensor_split,
    torch.unbind,
    torch.flip,
    torch.roll,
    torch.narrow,
    torch.select,
    torch.movedim,
    torch.moveaxis,
    torch.tile,
    torch.unflatten,
    torch.channel_shuffle,
    torch.native_channel_shuffle,
    F.pad,
    F.pixel_shuffle,
    F.pixel_unshuffle,
    F.unfold,
    torch.repeat_interleave,
    torch.broadcast_to,
    torch.diagonal,
    torch.rot90,
    torch.atleast_2d,
    torch.atleast_3d,
    torch.ravel,
)
_METHODS = (
    ".view",
    ".reshape",
    ".flatten",
    ".unflatten",
    ".permute",
    ".transpose",
    ".swapaxes",
    ".t",
    ".squeeze",
    ".unsqueeze",
    ".expand",
    ".expand_as",
    ".repeat",
    ".flip",
    ".roll",
    ".narrow",
    ".select",
    ".movedim",
    ".split",
    ".chunk",
    ".tensor_split",
    ".unbind",
    ".view_as",
    ".reshape_as",
    ".tile",
    ".repeat_interleave",
    ".unfold",
    ".diagonal",
    ".ravel",
    ".squeeze_",
    ".unsqueeze_",
)
_ATEN = (
    aten.view,
    aten._unsafe_view,
    aten.reshape,
    aten.flatten,
    aten.unflatten,
    aten.permute,
    aten.transpose,
    aten.t,
    aten.squeeze,
    aten.squeeze_,
    aten.unsqueeze,
    aten.unsqueeze_,
    aten.expand,
    aten.expand_as,
    aten.repeat,
    aten.flip,
    aten.roll,
    aten.narrow,
    aten.select,
    aten.slice,
    aten.movedim,
    aten.cat,
    aten.stack,
    aten.split,
    aten.split_with_sizes,
    aten.chunk,
    aten.unbind,
    aten.tensor_split,
    aten.constant_pad_nd,
    aten.pad,
    aten.reflection_pad1d,
    aten.reflection_pad2d,
    aten.reflection_pad3d,
    aten.replication_pad1d,
    aten.replication_pad2d,
    aten.replication_pad3d,
    aten.pixel_shuffle,
    aten.pixel_unshuffle,
    aten.channel_shuffle,
    aten.native_channel_shuffle,
    aten.im2col,
    aten.repeat_interleave,
    aten.view_as,
    aten.reshape_as,
    aten.swapaxes,
    aten.swapdims,
    aten.diagonal,
    aten.unfold,
    aten.alias_copy,
    aten.view_copy,
    aten.permute_copy,
    aten.expand_copy,
    aten.slice_copy,
    aten.select_copy,
    aten.unsqueeze_copy,
    aten.squeeze_copy,
    aten.transpose_copy,
    aten.split_copy,
    aten.unbind_copy,
    aten.t_copy,
    aten.concat,
    aten.concatenate,
    aten.tile,
    aten.as_strided,
)


_NAMED = (
    "torchvision.models.swin_transformer._patch_merging_pad",
    "connectome.compact.window.window_partition",  # Swin's attention opened by the compaction
    "connectome.compact.window.window_merge",
)


@rule(*_MODULES, *_FUNCS, *_METHODS, *_ATEN, *_NAMED)
def structural(ctx: Ctx) -> Op:
    return index_map_op(ctx, ctx.hints)


@rule(
    torch.index_select,
    torch.gather,
    torch.take,
    torch.take_along_dim,
    ".take_along_dim",
    aten.take_along_dim,
    ".index_select",
    ".gather",
    ".take",
    aten.index_select,
    aten.gather,
    aten.take,
    aten.index,
    aten.embedding_dense_backward,
    "torchvision.models.swin_transformer._get_relative_position_bias",
)
def indexing(ctx: Ctx) -> Op:
    """Indexing by a constant index tensor (a buffer): an exact map; by a computed one: :mod:`.gather`."""
    from .gather import picked

    op = picked(ctx)  # indices computed from the input: any place along the indexed dims
    if op is not None:
        return op
    data = [a for a in ctx.tensor_args if ctx.val(a).is_floating_point()][:1] or ctx.tensor_args[:1]
    try:
        return index_map_op(ctx, ctx.hints, data)
    except Exception as e:
        return Fallback(ctx.out, [ctx.val(a) for a in ctx.tensor_args], f"indexing by a computed tensor ({e})")

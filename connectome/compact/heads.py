"""Attention heads as classes of channels (:mod:`.channels`): a head goes whole, or stays.

``scaled_dot_product_attention`` mixes every feature of a head's query and key, and averages each value
feature over tokens: a single feature of a head cannot be removed, a whole head can (its queries, keys,
values and outputs together). The count of heads then follows the width, where the model splits its
features into heads by their width (``unflatten(-1, (-1, d))``, as the compaction's opened attention
does).

Examples
--------
>>> import torch
>>> from connectome.analysis import analyze
>>> from connectome.compact.attention import SplitAttention
>>> from connectome.compact.channels import Channels
>>> attn = SplitAttention(8, 2).eval()
>>> class Self(torch.nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.attn = attn
...     def forward(self, x):
...         return self.attn(x, x, x, need_weights=False)[0]
>>> ch = Channels.build(analyze(Self(), input_shape=(1, 5, 8), tracer="fx"))
>>> len(set(ch.layers["attn.q"].out_classes(ch).tolist()))  # two heads: two classes
2
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx

__all__ = ["attention_heads", "head_blocks"]

_PASS_METHODS = {"transpose", "permute", "contiguous"}
_PASS_FUNCTIONS = {torch.transpose, torch.permute}


def _feeds_attention(node: fx.Node) -> bool:
    """Whether every use of ``node`` reaches ``scaled_dot_product_attention`` as its query, key or value,
    through transposes and permutes only."""
    todo, seen = [node], set()
    while todo:
        n = todo.pop()
        for user in n.users:
            if user in seen:
                continue
            seen.add(user)
            if user.op == "call_function" and user.target is F.scaled_dot_product_attention:
                qkv = list(user.args[:3]) + [user.kwargs.get(k) for k in ("query", "key", "value")]
                if n not in qkv or n in user.args[3:] or n in list(user.kwargs.values())[3:]:
                    return False
            elif (user.op == "call_method" and user.target in _PASS_METHODS) or (
                user.op == "call_function" and user.target in _PASS_FUNCTIONS
            ):
                todo.append(user)
            else:
                return False
    return True


def attention_heads(ch: Any, node: fx.Node, val: Any) -> bool:
    """``scaled_dot_product_attention`` on (..., heads, tokens, features): each head's query, key and value
    features and its output features are one class, so that a head goes whole or stays. Where a mask has
    a size per head, or key and value heads differ from the query's, it pins instead."""
    if (
        node.op != "call_function"
        or node.target is not F.scaled_dot_product_attention
        or not isinstance(val, torch.Tensor)
    ):
        return False
    names = ("query", "key", "value", "attn_mask")
    args = [node.args[i] if len(node.args) > i else node.kwargs.get(n) for i, n in enumerate(names)]
    qkv = [ch.ids.get(a) if isinstance(a, fx.Node) else None for a in args[:3]]
    tensors = [t for t in qkv if isinstance(t, torch.Tensor) and t.dim() >= 3]
    if len(tensors) != 3 or val.dim() < 3 or len({t.shape[-3] for t in tensors} | {val.shape[-3]}) != 1:
        return False
    h = val.shape[-3]
    mask = ch.ids.get(args[3]) if isinstance(args[3], fx.Node) else None
    if isinstance(mask, torch.Tensor) and mask.dim() >= 3 and mask.shape[-3] != 1:
        return False
    out = torch.empty(val.shape, dtype=torch.long)
    for j in range(h):
        out.select(-3, j).fill_(ch.union.join_all(torch.cat([t.select(-3, j).reshape(-1) for t in tensors])))
    ch.ids[node] = out
    return True


def head_blocks(ch: Any, node: fx.Node) -> bool:
    """``x.unflatten(dim, (-1, *block))``: whole blocks (attention heads) of channels along ``dim``, their
    number left free. Each block's channels become one class, so blocks go whole and the count follows
    the width. An unflatten to fixed counts is a reshape that pins."""
    if not (node.op == "call_method" and node.target == "unflatten" or node.target is torch.unflatten):
        return False
    args = node.args
    x = args[0] if args else None
    ids = ch.ids.get(x) if isinstance(x, fx.Node) else None
    if (
        len(args) != 3
        or not isinstance(ids, torch.Tensor)
        or not isinstance(args[1], int)
        or not isinstance(args[2], (tuple, list))
    ):
        return False
    sizes = list(args[2])
    if not sizes or sizes[0] != -1 or not all(isinstance(s, int) and s > 0 for s in sizes[1:]):
        return False
    if not _feeds_attention(node):  # elsewhere the count of blocks may matter (an index into them)
        return False
    block = int(np.prod(sizes[1:], dtype=np.int64))
    moved = ids.movedim(args[1], -1)
    if moved.shape[-1] % block:
        return False
    per = moved.reshape(*moved.shape[:-1], -1, block)
    for b in range(per.shape[-2]):
        ch.union.join_all(per[..., b, :])
    ch.ids[node] = ids.unflatten(args[1], sizes)
    return True

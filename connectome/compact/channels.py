"""Which channels of a traced model must be removed together: classes of channels, found by running ids.

Every tensor of the traced graph gets an integer tensor of its own shape, an *id* per element, naming
the channel it belongs to. A layer that can be sliced (a convolution, a linear layer, an embedding)
starts fresh ids, one per output channel; a per-channel op (batch norm, a grouped convolution, a
pooling) or an elementwise op (activations, residual adds, gates) joins the ids of its inputs and output
element by element (a group's channels together); an op that only moves elements (``cat``, ``flatten``,
``permute``) is run on the ids themselves, so that the ids land where the values would. Joined ids form
one class (a union-find): the channels of a residual stream, concatenated feature maps, a group of a
grouped or depthwise convolution with its input channels.
One decision is taken per class: remove every channel in it, or none. Attention joins each head's
query, key, value and output features into one class, where the heads are split off by their width
just before it (``unflatten(-1, (-1, d))``). Anything else (normalisation across channels, reshapes with fixed sizes,
model inputs and outputs) *pins* the ids it touches: those channels are kept as they are.

Examples
--------
>>> import torch
>>> from torch import nn
>>> from connectome.analysis import analyze
>>> m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
>>> ch = Channels.build(analyze(m, input_shape=(1, 3), tracer="fx"))
>>> [layer.target for layer in ch.layers.values()], ch.layers["0"].out_classes(ch).tolist() == [1, 2, 3, 4]
(['0', '2'], True)
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from .heads import attention_heads, head_blocks
from .window import window_merge, window_partition

PIN = 0  # the class of every channel that must stay

# ops that only move elements: run on the ids, they put each id where the value goes
MOVES = {
    torch.cat,
    torch.concat,
    torch.flatten,
    torch.permute,
    torch.transpose,
    torch.squeeze,
    torch.unsqueeze,
    operator.getitem,
    window_partition,
    window_merge,
}
MOVE_METHODS = {"flatten", "permute", "transpose", "contiguous", "squeeze", "unsqueeze"}
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class Layer:
    """A module the compaction slices: its kind, and the nodes of its calls (input node, output node)."""

    target: str
    kind: str  # "cut" (conv or linear: input and output sliced apart), "grouped", "norm", "embedding"
    module: Any  # the nn.Module (Any: its attributes are read by kind)
    calls: list[tuple[fx.Node | None, fx.Node]] = field(default_factory=list)
    in_dim: int = 1
    out_dim: int = 1

    def in_classes(self, ch: Channels) -> np.ndarray:
        """The class of each input channel (of the first call: every call's are joined)."""
        node = self.calls[0][0]
        assert node is not None
        return ch.channel_classes(node, self.in_dim)

    def out_classes(self, ch: Channels) -> np.ndarray:
        return ch.channel_classes(self.calls[0][1], self.out_dim)


class _Union:
    """Union-find over ids; the class of every id is cached between joins (asked once per layer)."""

    def __init__(self) -> None:
        self.parent = [PIN]
        self._table: np.ndarray | None = None

    def fresh(self, n: int) -> torch.Tensor:
        self._table = None
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return torch.arange(start, start + n)

    def find(self, a: int) -> int:
        p = self.parent
        while p[a] != a:
            p[a] = p[p[a]]
            a = p[a]
        return a

    def join(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the pinned class stays its own root
            if rb == PIN:
                ra, rb = rb, ra
            self.parent[rb] = ra
            self._table = None

    def join_pairs(self, a: torch.Tensor, b: torch.Tensor) -> None:
        pairs = torch.unique(torch.stack([a.reshape(-1), b.reshape(-1)], 1), dim=0)
        for x, y in pairs.tolist():
            if x != y:
                self.join(x, y)

    def join_all(self, ids: torch.Tensor) -> int:
        """Join every id in ``ids``; returns the class."""
        u = torch.unique(ids).tolist()
        for x in u[1:]:
            self.join(u[0], x)
        return self.find(u[0]) if u else PIN

    def roots(self, ids: np.ndarray) -> np.ndarray:
        """The class of each id in ``ids``."""
        if self._table is None:
            self._table = np.array([self.find(i) for i in range(len(self.parent))], np.int64)
        return self._table[ids]


@dataclass
class Channels:
    """The id tensor of every traced tensor, the classes joining them, and the layers to slice."""

    graph: fx.Graph
    root: nn.Module
    ids: dict[fx.Node, Any]
    union: _Union
    layers: dict[str, Layer]
    pinned_by: dict[str, str] = field(default_factory=dict)  # node -> why it pins what it touches

    def channel_classes(self, node: fx.Node, dim: int) -> np.ndarray:
        """The class of each channel of ``node`` along ``dim`` (each channel's ids are one class)."""
        ids = self.ids[node]
        per = ids.movedim(dim, 0).reshape(ids.shape[dim], -1)[:, 0].numpy()
        return self.union.roots(per)

    @staticmethod
    def build(analysis: Any) -> Channels:
        """The classes of the fx-traced model behind ``analysis`` (an :class:`~connectome.Analysis`)."""
        traced = analysis.walk.graph.traced
        if traced.tracer != "fx":
            raise ValueError("compaction needs the model traced by torch.fx (tracer='fx')")
        ch = Channels(traced.graph, traced.root, {}, _Union(), {})
        ops = analysis.walk.graph.ops
        shared = _shared_modules(traced.root)
        for node in traced.graph.nodes:
            _visit(ch, node, traced.vals.get(node), ops.get(node), shared)
        return ch


def _shared_modules(root: nn.Module) -> set[str]:
    """Modules holding a parameter that another module holds too (tied weights): never sliced."""
    owners: dict[int, list[str]] = {}
    for name, mod in root.named_modules(remove_duplicate=False):
        for p in mod.parameters(recurse=False):
            owners.setdefault(id(p), []).append(name)
    return {n for names in owners.values() if len(set(names)) > 1 for n in names}


def _is_tensor(v: Any) -> bool:
    return isinstance(v, torch.Tensor)


def _tensors(v: Any) -> list[torch.Tensor]:
    if isinstance(v, torch.Tensor):
        return [v]
    if isinstance(v, (tuple, list)):
        return [t for x in v for t in _tensors(x)]
    return []


def _pinned(val: Any) -> Any:
    if isinstance(val, torch.Tensor):
        return torch.zeros(val.shape, dtype=torch.long)
    if isinstance(val, (tuple, list)):
        return type(val)(_pinned(v) for v in val) if isinstance(val, tuple) else [_pinned(v) for v in val]
    return val


def _pin(ch: Channels, node: fx.Node, val: Any, why: str) -> None:
    for a in node.all_input_nodes:
        for t in _tensors(ch.ids.get(a)):
            ch.union.join_all(torch.cat([t.reshape(-1), torch.zeros(1, dtype=torch.long)]))
    ch.ids[node] = _pinned(val)
    if _tensors(ch.ids[node]) and any(_tensors(ch.ids.get(a)) for a in node.all_input_nodes):
        ch.pinned_by[node.name] = why


def _load(ch: Channels, arg: Any) -> Any:
    return fx.node.map_arg(arg, lambda n: ch.ids.get(n))


def _fresh(ch: Channels, shape: tuple, dim: int) -> torch.Tensor:
    dim = dim % len(shape)
    ids = ch.union.fresh(shape[dim])
    view = [1] * len(shape)
    view[dim] = shape[dim]
    return ids.reshape(view).expand(shape).clone()


def _per_channel(ch: Channels, ids: torch.Tensor, dim: int) -> torch.Tensor:
    """One class per channel of ``ids`` along ``dim`` (joining whatever ids each channel holds)."""
    dim = dim % ids.dim()
    per = ids.movedim(dim, 0).reshape(ids.shape[dim], -1)
    return torch.tensor([ch.union.join_all(row) for row in per], dtype=torch.long)


def _broadcast_join(ch: Channels, node: fx.Node, val: torch.Tensor) -> None:
    ins = [ch.ids[a] for a in node.all_input_nodes if _is_tensor(ch.ids.get(a))]
    ins = [t for t in ins if t.dim() <= val.dim()]
    if not ins:
        ch.ids[node] = _pinned(val)
        return
    full = [torch.broadcast_to(t, val.shape) for t in ins]
    out = full[0].clone()
    for t in full[1:]:
        ch.union.join_pairs(out, t)
    ch.ids[node] = out


def _visit(ch: Channels, node: fx.Node, val: Any, op: Any, shared: set[str]) -> None:
    kind = type(op).__name__ if op is not None else None
    if node.op == "output":
        for t in _tensors(_load(ch, node.args)):
            ch.union.join_all(torch.cat([t.reshape(-1), torch.zeros(1, dtype=torch.long)]))
        return
    if not _tensors(val):  # shapes and sizes: evaluated as the model would, on the ids' shapes
        try:
            ch.ids[node] = _evaluate(ch, node)
        except Exception:
            ch.ids[node] = val
        return
    if node.op in ("placeholder", "get_attr") or kind == "Constant":
        _pin(ch, node, val, "a model input or a constant")
        return
    if node.op == "call_module" and _module(ch, node, ch.root.get_submodule(str(node.target)), val, shared):
        return
    x = node.all_input_nodes[0] if node.all_input_nodes else None
    if kind == "Elementwise" and _is_tensor(val):
        _broadcast_join(ch, node, val)
        return
    if kind == "Positional" and _is_tensor(val) and x is not None and _is_tensor(ch.ids.get(x)):
        dim = op.cdim % val.dim()
        per = _per_channel(ch, ch.ids[x], dim)
        if len(per) == val.shape[dim]:
            shape = [1] * val.dim()
            shape[dim] = val.shape[dim]
            ch.ids[node] = per.reshape(shape).expand(val.shape).clone()
            return
    if attention_heads(ch, node, val) or head_blocks(ch, node):
        return
    if _moves(ch, node):
        try:
            out = _evaluate(ch, node)
        except Exception:
            out = None
        shapes_match = out is not None and [t.shape for t in _tensors(out)] == [t.shape for t in _tensors(val)]
        if shapes_match and not _drops_channels(ch, node, out):
            ch.ids[node] = out
            return
    _pin(ch, node, val, f"{node.op} {getattr(node.target, '__name__', node.target)}")


def _drops_channels(ch: Channels, node: fx.Node, out: Any) -> bool:
    """Whether an index into a tensor leaves out some of its channels (``x[..., 4:]``): where the kept
    channels sit depends on what is removed before them, so the tensor is pinned. Leaving out positions
    (a class token, a crop) keeps every channel, and a move."""
    x = node.args[0] if node.args else None
    ids = ch.ids.get(x) if isinstance(x, fx.Node) else None
    if node.target is not operator.getitem or not _is_tensor(ids) or not _is_tensor(out):
        return False
    return len(torch.unique(out)) < len(torch.unique(ids))


def _moves(ch: Channels, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(ch.root.get_submodule(str(node.target)), nn.Flatten)
    if node.op == "call_function":
        return node.target in MOVES
    return node.op == "call_method" and node.target in MOVE_METHODS


def _evaluate(ch: Channels, node: fx.Node) -> Any:
    args, kwargs = _load(ch, node.args), _load(ch, node.kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)  # type: ignore[operator]
    if node.op == "call_method":
        return getattr(args[0], str(node.target))(*args[1:], **kwargs)
    if node.op == "call_module" and isinstance(ch.root.get_submodule(str(node.target)), nn.Flatten):
        return ch.root.get_submodule(str(node.target))(*args)
    raise TypeError(node.op)


def _module(ch: Channels, node: fx.Node, mod: nn.Module, val: Any, shared: set[str]) -> bool:
    """Lower a call of a module the compaction slices; False for any other module."""
    target = str(node.target)
    kind = _kind(mod)
    x = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    xin = ch.ids.get(x) if x is not None else None
    if kind is None or target in shared or not _is_tensor(val) or len(node.all_input_nodes) != 1:
        return False
    if not isinstance(xin, torch.Tensor) or x is None:
        return False
    layer = ch.layers.get(target)
    if layer is None:
        dims = (-1, -1) if isinstance(mod, (nn.Linear, nn.Embedding)) else (1, 1)
        layer = ch.layers[target] = Layer(target, kind, mod, [], *dims)
    first = layer.calls[0] if layer.calls else None
    layer.calls.append((x, node))
    if kind == "embedding":  # the input holds token ids, not channels
        ch.ids[node] = ch.ids[first[1]].clone() if first is not None else _fresh(ch, tuple(val.shape), -1)
        return True
    cin = _per_channel(ch, xin, layer.in_dim)
    if first is not None and first[0] is not None:  # a module called again: sliced once, for every call
        ch.union.join_pairs(cin, _per_channel(ch, ch.ids[first[0]], layer.in_dim))
    if kind == "cut":
        ch.ids[node] = ch.ids[first[1]].clone() if first is not None else _fresh(ch, tuple(val.shape), layer.out_dim)
        return True
    # per channel (norm), or per group (grouped and depthwise convolutions): a group's input and output
    # channels are one class, so that the groups stay of one size
    if kind == "grouped":
        cin = torch.tensor([ch.union.join_all(g) for g in cin.reshape(int(layer.module.groups), -1)], dtype=torch.long)
    per_out = cin.repeat_interleave(val.shape[1] // len(cin))
    shape = [1] * val.dim()
    shape[1] = val.shape[1]
    ch.ids[node] = per_out.reshape(shape).expand(val.shape).clone()
    return True


def _kind(mod: nn.Module) -> str | None:
    if isinstance(mod, nn.Linear):
        return "cut"
    if isinstance(mod, CONVS) and mod.padding_mode == "zeros":
        if mod.groups == 1:
            return "cut"
        return "grouped"
    if isinstance(mod, NORMS) and not mod.training and mod.track_running_stats:
        return "norm"
    if isinstance(mod, nn.Embedding):
        return "embedding"
    return None

"""Recurrent layers: ``nn.RNN``, ``nn.LSTM``, ``nn.GRU`` (and ATen's ``rnn_tanh``, ``rnn_relu``, ``lstm``,
``gru`` that torch.export records), any number of layers, one or two directions, batch first or not.

Units are the hidden features of each layer and direction. Hidden unit ``j`` reads input feature ``k`` if
some gate row of ``j`` in ``weight_ih`` keeps ``k``, and reads hidden unit ``i`` if some gate row of ``j``
in ``weight_hh`` keeps ``i``. Over the time steps the recurrence is a fixed point: ``j`` is alive from the
input if it reads a live input feature, or a live hidden unit (or a live initial state); it is alive to
the output if its output feature is, or a hidden unit alive to the output reads it. Time is not
followed step by step: a unit alive at some step counts as alive at every step (sound, and exact for
the weights, since every step shares them).

Examples
--------
>>> import torch
>>> from connectome import analyze
>>> class Tagger(torch.nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.rnn, self.out = torch.nn.LSTM(4, 6, batch_first=True), torch.nn.Linear(6, 2)
...     def forward(self, x):
...         return self.out(self.rnn(x)[0])
>>> m = Tagger()
>>> with torch.no_grad():
...     _ = m.rnn.weight_hh_l0.zero_()
...     m.rnn.weight_ih_l0.view(4, 6, 4)[:, 3:] = 0     # no gate of hidden units 3-5 reads the input
>>> res = analyze(m, input_shape=(1, 5, 4))
>>> res.effective_masks["out.weight"][:, 3:].any().item()
False
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import fx, nn

from ..status import Status
from .base import Ctx, Op, Weight, rule
from .fallback import Fallback

aten = torch.ops.aten

__all__ = ["Recurrent"]

GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _closure(seed: np.ndarray, reads: np.ndarray) -> np.ndarray:
    """Units reachable from ``seed`` where ``reads[j, i]`` lets ``i`` reach ``j``."""
    alive, frontier = seed.copy(), seed.copy()
    while frontier.any():
        new = reads[:, frontier].any(1) & ~alive
        alive |= new
        frontier = new
    return alive


class Recurrent(Op):
    """A stack of recurrent layers; reads the input sequence and the initial states (if tensors).

    ``cells[l][d]`` holds the weights of layer ``l``, direction ``d``: ``(Weight | None, mask_ih,
    Weight | None, mask_hh)``. ``states`` lists what the initial-state inputs are (``"h"``, ``"c"``), and
    ``outs`` the flat layout of the output (``"y"``, ``"h"``, ``"c"``) with its nesting in ``nest``.
    """

    multi = True

    def __init__(self, mode: str, cells: list, hidden: int, out_val: Any, states: list[str]):
        self.mode, self.cells, self.hidden, self.states = mode, cells, hidden, states
        self.gates = GATES[mode]
        self.weights = [w for layer in cells for c in layer for w in (c[0], c[2]) if w is not None]
        self.out_val = out_val
        flat = _flatten(out_val)
        self.flat_shapes = [tuple(t.shape) for t in flat]
        self.outs = ["y", "h", "c"][: len(flat)]
        self.reads_ih = [[c[1].reshape(self.gates, hidden, -1).any(0).numpy() for c in layer] for layer in cells]
        self.reads_hh = [[c[3].reshape(self.gates, hidden, hidden).any(0).numpy() for c in layer] for layer in cells]

    # ---- per-unit fixed points ----------------------------------------------------------------------
    def _state(self, ins: list, kind: str) -> np.ndarray | None:
        """Initial state ``kind`` as (layers * directions, hidden) alive-anywhere, or None."""
        if kind not in self.states:
            return None
        s = ins[1 + self.states.index(kind)]
        if not isinstance(s, Status) or not s.any():
            return None
        return np.asarray(s.full().reshape(s.shape[0], -1, self.hidden).any(1))

    def _alive(self, ins: list) -> tuple[list[np.ndarray], list[list[np.ndarray]], list[list[np.ndarray]]]:
        """Per layer: input features alive; per layer and direction: units alive, and read state alive."""
        x = ins[0]
        feat = x.with_cdim(-1).alive_units() if isinstance(x, Status) else np.zeros(0, bool)
        h0, c0 = self._state(ins, "h"), self._state(ins, "c")
        dirs = len(self.cells[0])
        inputs, alive, reads_state = [], [], []
        for layer, (ih, hh) in enumerate(zip(self.reads_ih, self.reads_hh)):
            inputs.append(feat)
            units, seen = [], []
            for d in range(dirs):
                k = layer * dirs + d
                h = h0[k] if h0 is not None else np.zeros(self.hidden, bool)
                seed = ih[d][:, feat].any(1) | hh[d][:, h].any(1)
                if c0 is not None:  # c feeds h through the cell, without a weight
                    seed |= c0[k]
                if self.mode == "GRU":  # h' = (1 - z) * n + z * h: the state passes without a weight
                    seed |= h
                a = _closure(seed, hh[d])
                units.append(a)
                seen.append(a | h)
            alive.append(units)
            reads_state.append(seen)
            feat = np.concatenate(units)
        return inputs, alive, reads_state

    def _needed(self, grad: Any) -> tuple[list[list[np.ndarray]], np.ndarray]:
        """Per layer and direction: units alive to the output; and the input features layer 0 needs."""
        parts = dict(zip(self.outs, _flatten(grad, len(self.outs))))
        dirs, layers = len(self.cells[0]), len(self.cells)
        y = parts.get("y")
        feat = y.with_cdim(-1).alive_units() if isinstance(y, Status) else np.zeros(dirs * self.hidden, bool)
        final = np.zeros((layers * dirs, self.hidden), bool)
        for kind in ("h", "c"):
            s = parts.get(kind)
            if isinstance(s, Status) and s.any():
                final |= s.full().reshape(layers * dirs, -1, self.hidden).any(1)
        needed: list[list[np.ndarray]] = [[] for _ in range(layers)]
        for layer in reversed(range(layers)):
            below = np.zeros(self.reads_ih[layer][0].shape[1], bool)
            for d in range(dirs):
                seed = feat[d * self.hidden : (d + 1) * self.hidden] | final[layer * dirs + d]
                n = _closure(seed, self.reads_hh[layer][d].T)
                needed[layer].append(n)
                below |= self.reads_ih[layer][d][n].any(0)
            feat = below
        return needed, feat

    # ---- the walk -----------------------------------------------------------------------------------
    def forward(self, ins: list) -> Any:
        _, alive, _ = self._alive(ins)
        top = np.concatenate(alive[-1])
        finals = np.stack([a for layer in alive for a in layer])
        flat = [_channels(self.flat_shapes[0], top)] + [_per_state(s, finals) for s in self.flat_shapes[1:]]
        return _nest(self.out_val, [f.with_zero(False) for f in flat])

    def backward(self, ins: list, out: Any, grad: Any) -> list[Status | None]:
        needed, feat = self._needed(grad)
        grads: list[Status | None] = [_channels(ins[0].shape, feat) if isinstance(ins[0], Status) else None]
        for kind, s in zip(self.states, ins[1:]):
            if not isinstance(s, Status):
                grads.append(None)
                continue
            rows = []
            for layer in range(len(self.cells)):
                for d, n in enumerate(needed[layer]):
                    read = self.reads_hh[layer][d][n].any(0)
                    rows.append(n if kind == "c" else (read | n) if self.mode == "GRU" else read)
            grads.append(_per_state(s.shape, np.stack(rows)))
        return grads

    def effective(self, ins: list, grad: Any) -> dict[str, torch.Tensor]:
        done = self.unreached(grad)
        if done is not None:
            return done
        inputs, _, reads_state = self._alive(ins)
        needed, _ = self._needed(grad)
        eff: dict[str, torch.Tensor] = {}
        for layer, cells in enumerate(self.cells):
            for d, (w_ih, m_ih, w_hh, m_hh) in enumerate(cells):
                rows = torch.from_numpy(np.tile(needed[layer][d], self.gates))[:, None]
                for w, m, cols in ((w_ih, m_ih, inputs[layer]), (w_hh, m_hh, reads_state[layer][d])):
                    if w is not None:
                        e = m & rows & torch.from_numpy(cols)[None, :]
                        eff[w.name] = eff[w.name] | e if w.name in eff else e
        return eff

    def unit_counts(self, name: str, ins: list, grad: Any) -> tuple[int, int, int, int] | None:
        """Units in, units out, dead from the input and dead to the output, of the cell owning ``name``."""
        for layer, cells in enumerate(self.cells):
            for d, (w_ih, m_ih, w_hh, _) in enumerate(cells):
                if name in (getattr(w_ih, "name", None), getattr(w_hh, "name", None)):
                    inputs, alive, _ = self._alive(ins)
                    needed = self._needed(grad)[0][layer][d] if grad is not None else np.zeros(self.hidden, bool)
                    units_in = m_ih.shape[1] if name == getattr(w_ih, "name", None) else self.hidden
                    return units_in, self.hidden, int((~alive[layer][d]).sum()), int((~needed).sum())
        return None


def _flatten(v: Any, n: int | None = None) -> list:
    if isinstance(v, (tuple, list)):
        return [x for item in v for x in _flatten(item)]
    if v is None and n is not None:
        return [None] * n
    return [v]


def _nest(like: Any, flat: list) -> Any:
    it = iter(flat)

    def build(v: Any) -> Any:
        return tuple(build(x) for x in v) if isinstance(v, (tuple, list)) else next(it)

    return build(like)


def _channels(shape: tuple, alive: np.ndarray) -> Status:
    """Alive at every position where the feature (last dim) is alive."""
    positions = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    table = np.ones((1, positions), bool)
    return Status.from_table(table, np.where(alive, 0, -1), shape, len(shape) - 1)


def _per_state(shape: tuple, rows: np.ndarray) -> Status:
    """An initial or final state, (layers * directions, [batch,] hidden), from per-cell unit vectors."""
    full = np.broadcast_to(rows.reshape(rows.shape[0], *([1] * (len(shape) - 2)), rows.shape[1]), shape)
    return Status.from_full(np.ascontiguousarray(full), len(shape) - 1)


def _cells(ctx: Ctx, weights: list[tuple[Any, Any]], layers: int, dirs: int) -> list:
    """(Weight | None, mask) pairs per cell, grouped by layer and direction."""
    flat = []
    for w, shape in weights:
        mask = w.mask if isinstance(w, Weight) else torch.ones(shape, dtype=torch.bool)
        flat.append((w if isinstance(w, Weight) else None, mask))
    cells = [flat[i : i + 2] for i in range(0, len(flat), 2)]
    return [[(*cells[k * dirs + d][0], *cells[k * dirs + d][1]) for d in range(dirs)] for k in range(layers)]


@rule(nn.RNN, nn.LSTM, nn.GRU)
def recurrent_module(ctx: Ctx) -> Op:
    m: Any = ctx.traced.module(ctx.node)
    x = ctx.node.args[0] if ctx.node.args else ctx.node.kwargs.get("input")
    if not isinstance(ctx.val(x), torch.Tensor) or m.proj_size:
        return Fallback(
            ctx.out, [ctx.val(a) for a in ctx.tensor_args], "LSTM projection" if m.proj_size else "packed sequence"
        )
    dirs = 2 if m.bidirectional else 1
    weights = []
    for layer in range(m.num_layers):
        for d in range(dirs):
            sfx = f"l{layer}" + ("_reverse" if d else "")
            for part in ("ih", "hh"):
                name = f"{ctx.node.target}.weight_{part}_{sfx}"
                weights.append((ctx.named_weight(name, "recurrent"), None))
    hx = ctx.node.args[1] if len(ctx.node.args) > 1 else ctx.node.kwargs.get("hx")
    states, data = _states(hx, m.mode == "LSTM")
    op = Recurrent(m.mode, _cells(ctx, weights, m.num_layers, dirs), m.hidden_size, ctx.out, states)
    op.data = [x] + data
    return op


def _states(hx: Any, lstm: bool) -> tuple[list[str], list[fx.Node]]:
    nodes = list(hx) if isinstance(hx, (tuple, list)) else [hx] if hx is not None else []
    kinds = ["h", "c"] if lstm else ["h"]
    pairs = [(k, n) for k, n in zip(kinds, nodes) if isinstance(n, fx.Node)]
    return [k for k, _ in pairs], [n for _, n in pairs]


_ATEN = {
    aten.lstm.input: "LSTM",
    aten.gru.input: "GRU",
    aten.rnn_tanh.input: "RNN_TANH",
    aten.rnn_relu.input: "RNN_RELU",
}


@rule(*_ATEN)
def recurrent_aten(ctx: Ctx) -> Op:
    """``aten.lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)``;
    GRU and RNN take one ``hx`` tensor instead of a list."""
    mode = _ATEN[ctx.node.target]  # type: ignore[index]
    args: Any = ctx.node.args  # fx types arguments as any of its argument kinds
    x, hx, params, has_biases, layers, _, _, bidirectional = args[:8]
    dirs = 2 if bidirectional else 1
    per_cell = 4 if has_biases else 2
    if len(params) != per_cell * layers * dirs:  # projections add a matrix per cell
        return Fallback(ctx.out, [ctx.val(a) for a in ctx.tensor_args], "LSTM projection")
    weights = []
    for c in range(layers * dirs):
        for p in params[c * per_cell : c * per_cell + 2]:
            weights.append((ctx.weight(p, "recurrent"), tuple(ctx.val(p).shape)))
    hidden = int(ctx.val(params[1]).shape[1])
    states, data = _states(hx, mode == "LSTM")
    op = Recurrent(mode, _cells(ctx, weights, layers, dirs), hidden, ctx.out, states)
    op.data = [x] + data
    return op

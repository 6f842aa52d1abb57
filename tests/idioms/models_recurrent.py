"""Recurrent layers in the shapes people use: stacked, bidirectional, time-first, unbatched, with initial
states given as inputs, and with recurrent weights that keep some hidden units apart.

Units are hidden features; a hidden unit lives if the input reaches it directly or through live hidden
units (``weight_hh``), and matters if the output reads it directly or through hidden units that matter.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .idiom import Idiom, cols, kills, randn, rows, seeded, zero

H = 6


class Stacked(nn.Module):
    """Two layers, both directions, time first; the head reads the last step."""

    def __init__(self, kind: str):
        super().__init__()
        cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind]
        self.a = nn.Linear(5, 5)
        self.rnn = cls(5, H, num_layers=2, bidirectional=True)
        self.head = nn.Linear(2 * H, 3)

    def forward(self, x):                        # (T, B, 5)
        y, _ = self.rnn(F.relu(self.a(x)))
        return self.head(y[-1])


class WithState(nn.Module):
    """Initial states computed from a second input; the final states feed the head too."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(4, H, batch_first=True)
        self.init = nn.Linear(3, H)
        self.head = nn.Linear(2 * H, 2)

    def forward(self, x, z):                     # x (B, T, 4), z (B, 3)
        h0 = torch.tanh(self.init(z)).unsqueeze(0)
        if self.kind == "lstm":
            y, (h, c) = self.rnn(x, (h0, torch.zeros_like(h0)))
        else:
            y, h = self.rnn(x, h0)
        return self.head(torch.cat([y[:, -1], h[0]], -1))


class Unbatched(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(4, H, nonlinearity="relu", num_layers=2)
        self.head = nn.Linear(H, 2)

    def forward(self, x):                        # (T, 4)
        return self.head(self.rnn(x)[0])


_TB = (randn(5, 2, 5),)
_STATE = (randn(2, 5, 4), randn(2, 3, seed=1))
# input unit 0 of the rnn dies; hidden unit 1 of layer 0 (forward) reads neither input nor other units
_STACK_KILL = kills(rows("a.weight", 0), zero("rnn.weight_ih_l0", (slice(None), [1, 2])),
                    zero("rnn.weight_hh_l0", (slice(None), [1])))


def _hidden_rows(path: str, gates: int, *units: int):
    """Zero every gate row of the given hidden units (they read nothing)."""
    return zero(path, ([g * H + u for g in range(gates) for u in units],))


IDIOMS = [
    Idiom("lstm_stacked_bidirectional", "recurrent", seeded(Stacked, "lstm"), _TB,
          kills(_STACK_KILL, _hidden_rows("rnn.weight_ih_l0", 4, 3), _hidden_rows("rnn.weight_hh_l0", 4, 3))),
    Idiom("gru_stacked_bidirectional", "recurrent", seeded(Stacked, "gru"), _TB,
          kills(_STACK_KILL, _hidden_rows("rnn.weight_ih_l0", 3, 3), _hidden_rows("rnn.weight_hh_l0", 3, 3))),
    Idiom("rnn_stacked_bidirectional", "recurrent", seeded(Stacked, "rnn"), _TB,
          kills(_STACK_KILL, _hidden_rows("rnn.weight_ih_l0", 1, 3), _hidden_rows("rnn.weight_hh_l0", 1, 3))),
    Idiom("lstm_initial_state", "recurrent", seeded(WithState, "lstm"), _STATE,
          kills(rows("init.weight", 2), _hidden_rows("rnn.weight_ih_l0", 4, 2), _hidden_rows("rnn.weight_hh_l0", 4, 2)),
          note="unit 2 reads nothing and starts from a dead state: it dies, and what reads it is ineffective"),
    Idiom("gru_initial_state", "recurrent", seeded(WithState, "gru"), _STATE,
          kills(rows("init.weight", 2), _hidden_rows("rnn.weight_ih_l0", 3, 2), _hidden_rows("rnn.weight_hh_l0", 3, 2)),
          note="a GRU passes h0 to h without a weight: unit 2 dies only because h0's unit 2 is dead too"),
    Idiom("rnn_relu_unbatched", "recurrent", seeded(Unbatched), (randn(5, 4),),
          kills(_hidden_rows("rnn.weight_ih_l0", 1, 0, 1), cols("rnn.weight_hh_l0", 2),
                _hidden_rows("rnn.weight_hh_l0", 1, 0, 1))),
]

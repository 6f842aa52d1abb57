"""Recurrent layers (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``): hand-computed units and effective weights, the
same answer from torch.fx (the module) and torch.export (``aten.lstm`` and friends), and the soundness
property on the corpus's recurrent entries."""
import pytest
import torch
from torch import nn

from connectome import analyze
from idioms.registry import IDIOMS, check


class Tagger(nn.Module):
    def __init__(self, cell: nn.Module, hidden: int, out: int = 2):
        super().__init__()
        self.rnn, self.head = cell, nn.Linear(hidden * (2 if cell.bidirectional else 1), out, bias=False)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


def _row(res, key):
    return next(r for r in res.layers if r["name"] == key)


@pytest.mark.parametrize("tracer", ["fx", "export", "auto"])
def test_lstm_without_recurrent_weights_keeps_the_units_its_input_reaches(tracer):
    # the acceptance case: weight_hh all zero, weight_ih reaching hidden units 0-2 only
    torch.manual_seed(0)
    m = Tagger(nn.LSTM(4, 6, batch_first=True), 6).eval()
    with torch.no_grad():
        m.rnn.weight_hh_l0.zero_()
        m.rnn.weight_ih_l0.view(4, 6, 4)[:, 3:] = 0
    res = analyze(m, input_shape=(1, 5, 4), tracer=tracer)
    assert res.unsupported_ops == []
    row = _row(res, "rnn.weight_ih_l0")
    assert (row["units_out"], row["dead_in"]) == (6, 3)
    assert not res.effective_masks["head.weight"][:, 3:].any()
    assert res.effective_masks["head.weight"][:, :3].all()
    assert res.effective_masks["rnn.weight_ih_l0"].view(4, 6, 4)[:, :3].all()


def test_hidden_units_live_through_the_recurrence_and_matter_through_it():
    m = Tagger(nn.RNN(2, 3, bias=False), 3, out=1)
    with torch.no_grad():
        m.rnn.weight_ih_l0.copy_(torch.tensor([[1.0, 1.0], [0, 0], [0, 0]]))
        m.rnn.weight_hh_l0.copy_(torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 0, 1]]))   # 1 reads 0; 2 reads 2
        m.head.weight.copy_(torch.tensor([[0.0, 1, 0]]))                            # the output reads 1
    res = analyze(m, input_shape=(4, 1, 2), tracer="fx")
    # unit 0 reads the input, unit 1 reads unit 0, unit 2 only itself: dead; the output needs 1, and so 0
    assert res.effective_masks["rnn.weight_ih_l0"].tolist() == [[True, True], [False, False], [False, False]]
    assert res.effective_masks["rnn.weight_hh_l0"].tolist() == [[False] * 3, [True, False, False], [False] * 3]
    assert res.effective_masks["head.weight"].tolist() == [[False, True, False]]
    row = _row(res, "rnn.weight_hh_l0")
    assert (row["units_in"], row["dead_in"], row["dead_out"]) == (3, 1, 1)


class GruState(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.head = nn.GRU(2, 2, bias=False), nn.Linear(2, 1, bias=False)

    def forward(self, x, h0):
        return self.head(self.rnn(x, h0)[0])


def test_gru_passes_its_initial_state_without_a_weight():
    torch.manual_seed(0)
    m = GruState()
    with torch.no_grad():
        m.rnn.weight_ih_l0.view(3, 2, 2)[:, 1] = 0     # unit 1 reads no input
        m.rnn.weight_hh_l0.zero_()                     # and no hidden unit
    x = torch.randn(3, 1, 2)
    alive_state = analyze(m, example_inputs=(x, torch.randn(1, 1, 2)), tracer="fx")
    assert alive_state.effective_masks["head.weight"].tolist() == [[True, True]]   # h' = ... + z * h0
    # the same state as a constant zero: unit 1 never moves
    class Zero(GruState):
        def forward(self, x):
            return super().forward(x, torch.zeros(1, 1, 2))
    z = Zero()
    z.load_state_dict(m.state_dict())
    assert analyze(z, example_inputs=(x,), tracer="fx").effective_masks["head.weight"].tolist() == [[True, False]]


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_fx_and_export_agree_on_stacked_bidirectional_layers(kind):
    from idioms.registry import prepare
    model, inputs = prepare(IDIOMS[f"{kind}_stacked_bidirectional"])
    a = analyze(model, example_inputs=inputs, tracer="fx")
    b = analyze(model, example_inputs=inputs, tracer="export")
    assert a.unsupported_ops == [] and b.unsupported_ops == []
    assert set(a.effective_masks) == set(b.effective_masks)
    for key in a.effective_masks:
        assert torch.equal(a.effective_masks[key], b.effective_masks[key]), key
    # the kill left layer 0's forward hidden unit 3 reading nothing: every weight out of it is ineffective
    eff = a.effective_masks["rnn.weight_ih_l1"]
    assert not eff[:, 3].any() and eff[:, 6:].any()


@pytest.mark.parametrize("name", sorted(n for n, i in IDIOMS.items() if i.family == "recurrent"
                                        or n in ("lstm_batch_first", "gru_batch_first")))
def test_recurrent_weights_themselves_are_found_ineffective(name):
    row = check(IDIOMS[name], "auto")
    assert row["sound"] and row["error"] is None
    from idioms.registry import prepare
    model, inputs = prepare(IDIOMS[name])
    res = analyze(model, example_inputs=inputs)
    assert res.unsupported_ops == []
    rec = [r for r in res.layers if r["kind"] == "recurrent"]
    assert rec and sum(r["nonzero"] - r["effective"] for r in rec) > 0

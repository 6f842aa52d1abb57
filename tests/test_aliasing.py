"""Writes through aliases, values that are not constants, and weights that autograd cannot follow: each model
here was once called unsound (zeroing the weights called ineffective changed its outputs)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import connectome
from soundness import apply_masks, zero_additive

TRACERS = ["fx", "export", "export-core"]


def _sound(model: nn.Module, shape: tuple, tracer: str) -> connectome.Analysis:
    model = zero_additive(model)
    res = connectome.analyze(model, input_shape=shape, tracer=tracer)
    x = torch.randn(shape)
    with torch.no_grad():
        assert torch.equal(model(x), apply_masks(model, res.effective_masks)(x)), tracer
    return res


class Alias(nn.Module):
    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.b, self.c = nn.Linear(2, 2), nn.Linear(4, 4)
        self.register_buffer("mem", torch.zeros(1, 4))
        self.keep = nn.Identity()

    def forward(self, x):                       # (1, 4)
        if self.how == "iadd_then_view":        # fx records h += y as h = h + y unless told otherwise
            h = x.new_zeros(1, 4)
            v = h[:, :2]
            h += self.c(x)
            return self.b(v)
        if self.how == "buffer_read_twice":     # fx reads a buffer anew at each access
            self.mem.copy_(self.c(x))
            return self.b(self.mem[:, :2])
        if self.how == "contiguous":
            h = x.new_zeros(1, 4)
            h.contiguous().add_(self.c(x))
            return self.b(h[:, :2])
        if self.how == "identity":
            h = x.new_zeros(1, 4)
            self.keep(h).add_(self.c(x))
            return self.b(h[:, :2])
        h = x.new_zeros(1, 4)                   # chained writes: the second writes through the first
        h[:, :2].mul_(1.0).add_(self.c(x)[:, :2])
        return self.b(h[:, :2])


@pytest.mark.parametrize("how", ["iadd_then_view", "buffer_read_twice", "contiguous", "identity", "chained"])
def test_writes_through_aliases_are_seen(how):
    # fx computes on a buffer for real while it traces (it is no proxy): a write into one is refused under
    # fx, and auto takes torch.export, which sees it
    if how == "buffer_read_twice":
        with pytest.raises(connectome.TraceError, match="writes into its buffer mem in place.*--tracer export"):
            connectome.analyze(Alias(how), input_shape=(1, 4), tracer="fx")
    for tracer in TRACERS[1:] + ["auto"] if how == "buffer_read_twice" else TRACERS:
        res = _sound(Alias(how), (1, 4), tracer)
        assert res.effective_masks["c.weight"].any(), tracer


def test_analysis_leaves_the_model_s_buffers_as_they_were():
    class Decay(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Linear(4, 4)
            self.register_buffer("scale", torch.tensor([1.0, 0.0, 1.0, 1.0]))

        def forward(self, x):
            g = self.scale
            g.mul_(0.5)
            return self.c(x) * g
    m = Decay()
    with pytest.raises(connectome.TraceError, match="writes into its buffer scale"):
        connectome.analyze(m, input_shape=(2, 4), tracer="fx")   # fx ran the write for real: refused
    assert m.scale.tolist() == [1.0, 0.0, 1.0, 1.0]
    for tracer in ["export", "export-core", "auto"]:
        connectome.analyze(m, input_shape=(2, 4), tracer=tracer)
        assert m.scale.tolist() == [1.0, 0.0, 1.0, 1.0], tracer


class Computed(nn.Module):
    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.a, self.b = nn.Linear(4, 4, bias=False), nn.Linear(4, 2, bias=False)
        self.w = nn.Parameter(torch.randn(4, 4))

    def forward(self, x):
        h = torch.relu(self.a(x))
        if self.how == "sign":                  # a binarised weight: zero gradient almost everywhere
            w = torch.sign(self.w)
        elif self.how == "quantised":
            w = torch.round(self.w / 0.05).clamp(-8, 7) * 0.05
        else:                                   # clamp(min=eps) maps the positive integers to themselves
            w = self.w.clamp(min=1e-3)
        return self.b(F.linear(h, w))


@pytest.mark.parametrize("how", ["sign", "quantised", "clamped"])
def test_weights_through_step_functions_and_clamps_are_sound(how):
    m = Computed(how)
    with torch.no_grad():
        m.w[:, 0] = 0
        m.a.weight[1] = 0
    for tracer in TRACERS:
        _sound(m, (2, 4), tracer)


def test_a_clamp_off_zero_makes_a_constant_that_passes_a_product():
    class Floor(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.c, self.b = nn.Linear(4, 4, bias=False), nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)).clamp(min=0.1) * self.c(x))
    m = Floor()
    with torch.no_grad():
        m.a.weight[0] = 0           # unit 0 is the constant 0.1, which still passes c(x)
    for tracer in TRACERS:
        res = _sound(m, (2, 4), tracer)
        assert res.effective_masks["c.weight"].all()


def test_indices_computed_from_the_input_write_anywhere_along_their_dim():
    class Route(nn.Module):
        def __init__(self):
            super().__init__()
            self.r, self.e, self.b = nn.Linear(4, 3), nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):           # (5, 4) tokens, each routed to one of 3 slots
            return self.b(x.new_zeros(3, 4).index_add(0, self.r(x).argmax(-1), self.e(x)))
    for tracer in TRACERS:
        m = Route()
        with torch.no_grad():
            m.e.weight[1] = 0           # feature 1 of every routed token is dead, wherever it lands
        res = _sound(m, (5, 4), tracer)
        assert res.unsupported_ops == []
        assert not res.effective_masks["b.weight"][:, 1].any() and res.effective_masks["b.weight"][:, 0].all()
        assert res.effective_masks["r.weight"].all()     # the router decides where: it stays effective


def test_a_number_read_off_the_input_is_refused_in_one_line():
    class Item(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.c = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.c(x) * self.a(x).abs().max().item()
    for tracer in ["export", "auto"]:
        with pytest.raises(connectome.TraceError, match=r"reads a number off the input's values.*keep it a tensor"):
            connectome.analyze(Item(), input_shape=(2, 4), tracer=tracer)


def test_a_buffer_matrix_is_an_operand_not_a_prunable_weight():
    class Dct(nn.Module):
        def __init__(self):
            super().__init__()
            self.l = nn.Linear(4, 2)
            self.register_buffer("dct", torch.randn(4, 4))

        def forward(self, x):
            return self.l(x @ self.dct)
    for tracer in TRACERS:
        res = connectome.analyze(Dct(), input_shape=(2, 4), tracer=tracer)
        assert set(res.effective_masks) == {"l.weight"} and res.params_total == 8

"""In-place writes are seen by later reads: the writing branch's weights are effective, under every tracer."""
import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import connectome
from connectome.graph.mutation import functionalize
from soundness import apply_masks, zero_additive

TRACERS = ["fx", "export", "export-core"]


class Writes(nn.Module):
    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(4, 4), nn.Linear(8, 2)

    def forward(self, x):
        h = self.a(x)
        if self.how == "add_":
            h.add_(self.b(x).repeat(1, 2))
        elif self.how == "mul_view":
            h[:, :4].mul_(self.b(x))
        elif self.how == "narrow":
            h.narrow(1, 2, 4).add_(self.b(x))
        elif self.how == "transpose":
            h.view(1, 2, 4).transpose(1, 2).add_(self.b(x).unsqueeze(2))
        elif self.how == "setitem":
            h[:, 2:6] = self.b(x)
        elif self.how == "setitem_add":
            h[:, 2:6] += self.b(x)
        return self.c(h)


WRITES = ["add_", "mul_view", "narrow", "transpose", "setitem", "setitem_add"]


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("how", WRITES)
def test_writes_are_seen_and_sound(how, tracer):
    torch.manual_seed(0)
    m = zero_additive(Writes(how))
    with torch.no_grad():
        m.a.weight[2] = 0           # unit 2 of h sees no input unless the write puts some there
    x = torch.randn(1, 4)
    try:
        res = connectome.analyze(m, x, tracer=tracer)
    except connectome.TraceError:
        assert tracer == "fx" and how.startswith("setitem")   # fx cannot trace item assignment
        return
    assert res.effective_masks["b.weight"].any()              # the writing branch carries signal
    with torch.no_grad():
        assert torch.equal(m(x), apply_masks(m, res.effective_masks)(x))
    c = res.effective_masks["c.weight"]
    if how in ("add_", "narrow", "transpose", "setitem", "setitem_add"):
        assert c[:, 2].all()        # the write made unit 2 of h alive
    if how == "mul_view":
        assert not c[:, 2].any()    # 0 * b(x) is still 0
    if how == "setitem" and tracer != "fx":
        assert not res.effective_masks["a.weight"][2:6].any()   # overwritten: a's units 2..5 reach nothing


def test_mixture_of_experts_combine_with_index_add():
    class MoE(nn.Module):
        def __init__(self):
            super().__init__()
            self.experts = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
            self.out = nn.Linear(4, 2)
            self.register_buffer("slots", torch.tensor([[0, 1], [2, 3], [4, 5]]))

        def forward(self, x):                     # (6, 4): tokens
            out = torch.zeros_like(x)
            for e, idx in zip(self.experts[:2], self.slots):
                out.index_add_(0, idx, e(x[idx]))  # expert 2 is never dispatched to
            return self.out(out)

    m = MoE()
    for tracer in TRACERS:
        res = connectome.analyze(m, input_shape=(6, 4), tracer=tracer)
        assert not res.collapsed and res.unsupported_ops == []
        assert res.effective_masks["experts.0.weight"].all() and res.effective_masks["experts.1.weight"].all()
        assert not res.effective_masks["experts.2.weight"].any()


def test_overlapping_fold_sums_blocks():
    class Fold(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.lin = nn.Conv2d(2, 2, 1), nn.Linear(36, 2)

        def forward(self, x):
            u = F.unfold(self.conv(x), 3, padding=1)             # every pixel in up to 9 blocks
            return self.lin(F.fold(u, (6, 6), 3, padding=1)[:, 0].flatten(1))

    m = Fold()
    for tracer in TRACERS:
        res = connectome.analyze(m, input_shape=(1, 2, 6, 6), tracer=tracer)
        assert res.effective_masks["conv.weight"][0].all() and not res.effective_masks["conv.weight"][1].any()


def test_functionalize_redirects_reads_of_the_base_and_of_old_views():
    class M(nn.Module):
        def forward(self, x):
            h = x * 2
            v = h[:, :2]                # a view taken before the write...
            h[:, 1:].mul_(x[:, :1])
            return v.sum(1, keepdim=True) + h     # ...and read after it
    g = fx.Tracer().trace(M())
    assert len(functionalize(g)) == 1
    gm = fx.GraphModule(M(), g)
    x = torch.randn(2, 3)
    assert torch.equal(gm(x), M()(x))
    out = next(n for n in g.nodes if n.op == "output").args[0]
    assert {a.target.__name__ if callable(a.target) else a.target for a in out.args} >= {"write_back"}


def test_empty_slices_analyse():
    class Empty(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.o = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x):
            h = self.a(x)
            return self.o(torch.cat([h, h[:, 6:]], 1))
    for tracer in TRACERS:
        assert connectome.analyze(Empty(), input_shape=(2, 4), tracer=tracer).params_effective == 36


def test_data_dependent_dispatch_is_a_one_line_error():
    class Dispatch(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate, self.expert = nn.Linear(4, 2), nn.Linear(4, 4)

        def forward(self, x):
            idx = torch.nonzero(self.gate(x).argmax(-1) == 0).squeeze(-1)
            return torch.zeros_like(x).index_add(0, idx, self.expert(x[idx]))
    for tracer in ["fx", "export", "auto"]:
        with pytest.raises(connectome.TraceError, match="depends on the input values.*dense mask") as e:
            connectome.analyze(Dispatch(), input_shape=(5, 4), tracer=tracer)
        assert "\n" not in str(e.value) and "nonzero" in str(e.value)


class Overwrites(nn.Module):
    """Each write replaces units 1 and 3 of h: a's rows 1 and 3 reach nothing; the writer's weights do."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.a, self.b, self.c = nn.Linear(4, 5), nn.Linear(4, 2), nn.Linear(5, 2)
        self.register_buffer("idx", torch.tensor([1, 3]))

    def forward(self, x):
        h, y = self.a(x), self.b(x)
        if self.how == "index_copy":
            h = h.index_copy(1, self.idx, y)
        elif self.how == "index_put":
            h = h.index_put((torch.arange(1).unsqueeze(1), self.idx.unsqueeze(0)), y)
        elif self.how == "select":          # select_scatter under torch.export
            h[:, 1] = y[:, 0]
            h[:, 3] = y[:, 1]
        elif self.how == "scatter":
            h = h.scatter(1, self.idx.unsqueeze(0), y)
        return self.c(h)


@pytest.mark.parametrize("how", ["index_copy", "index_put", "select", "scatter"])
def test_overwriting_writes_are_exact(how):
    m = Overwrites(how)
    for tracer in TRACERS:
        if how == "select" and tracer == "fx":
            continue                        # item assignment: fx cannot trace it
        res = connectome.analyze(m, input_shape=(1, 4), tracer=tracer)
        a = res.effective_masks["a.weight"]
        assert not a[[1, 3]].any() and a[[0, 2, 4]].all(), (tracer, a)
        assert res.effective_masks["b.weight"].all()

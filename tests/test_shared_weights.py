"""One mask per tensor: tied, shared, computed and parametrized weights, under every tracer."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import connectome
from soundness import apply_masks, zero_additive

TRACERS = ["fx", "export", "export-core"]


class TiedLM(nn.Module):
    """An output head that shares its tensor with the input embedding (GPT-2, OPT, T5, Llama...)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.mid = nn.Linear(6, 6)
        self.head = nn.Linear(6, 10, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(torch.relu(self.mid(self.emb(ids))))


def _ids():
    return torch.tensor([[1, 2, 3, 4, 5]])


@pytest.mark.parametrize("tracer", TRACERS)
def test_tied_head_is_one_tensor_named_as_named_parameters_names_it(tracer):
    m = TiedLM().eval()
    with torch.no_grad():
        m.mid.weight[:, 0] = 0     # as the embedding, feature 0 now reaches no output...
        m.mid.weight[1] = 0        # ...and as the head, hidden unit 1 sees no input: column 1 does nothing
    res = connectome.analyze(m, _ids(), tracer=tracer)
    params = dict(m.named_parameters())
    assert set(res.effective_masks) == {"emb.weight", "mid.weight"} <= set(params)
    assert res.params_total == 60 + 36                       # the shared tensor counted once
    row = next(r for r in res.layers if r["name"] == "emb")
    assert row["shared_with"] == ["head.weight"] and row["uses"] == 2
    # each use alone leaves a column ineffective; the tensor is effective wherever either use needs it
    assert res.effective_masks["emb.weight"].all()
    assert res.params_effective == 60 + 25
    x = _ids()
    base = zero_additive(m)
    with torch.no_grad():
        assert torch.equal(base(x), apply_masks(base, res.effective_masks)(x))


def test_module_called_twice_ors_both_uses():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 1)

        def forward(self, x):
            return self.b(self.a(torch.relu(self.a(x))))

    m = Twice()
    with torch.no_grad():
        m.b.weight[0, 2] = 0        # the second call's unit 2 reaches no output; the first call's does
    res = connectome.analyze(m, input_shape=(1, 3))
    assert res.effective_masks["a.weight"].all()
    assert res.params_total == 12 and next(r for r in res.layers if r["name"] == "a")["uses"] == 2


class Computed(nn.Module):
    """Weights reached through a computation: a scale, a transpose, a flip."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 3, 3, 3))
        self.s = nn.Parameter(torch.tensor(0.5))
        self.v = nn.Parameter(torch.randn(2, 4))

    def forward(self, x):
        h = F.conv2d(x, self.s * self.w, padding=1).mean((2, 3))
        return F.linear(h, self.v.t().t()) + h.flip(1) @ self.v.flip(1).t()


@pytest.mark.parametrize("tracer", TRACERS)
def test_computed_weights_are_traced_back_to_their_parameter(tracer):
    m = Computed()
    with torch.no_grad():
        m.w[1] = 0                  # output channel 1 is dead: its v column reads nothing
        m.v[:, 3] = 0
    res = connectome.analyze(m, input_shape=(1, 3, 5, 5), tracer=tracer)
    assert set(res.effective_masks) == {"w", "v"}               # the scalar s is not a prunable weight
    v_eff = res.effective_masks["v"]
    # v is used twice: as itself (column 1 dead) and flipped (h.flip(1) puts dead channel 1 on column 2,
    # and v.flip(1) puts v's column 1 there too), so v's column 1 is dead in both uses
    assert v_eff[:, 0].all() and v_eff[:, 2].all() and not v_eff[:, 1].any() and not v_eff[:, 3].any()
    w_eff = res.effective_masks["w"]
    assert not w_eff[1].any() and w_eff[0].any()
    assert not w_eff[3].any()                                   # channel 3 feeds only v's zero column


def test_standardised_weight_counts_the_computed_support():
    class WS(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 4))

        def forward(self, x):
            w = self.w - self.w.mean(1, keepdim=True)
            return F.linear(x, w / w.std(1, keepdim=True))

    m = WS()
    with torch.no_grad():
        m.w[0, :2] = 0              # zero entries of w, nonzero after standardisation
    res = connectome.analyze(m, input_shape=(1, 4))
    assert res.params_nonzero == 12 and res.effective_masks["w"].all()


@pytest.mark.parametrize("tracer", ["fx", "export", "auto"])
def test_torch_ao_sparsifier_masks_are_read(tracer):
    from torch.ao.pruning import WeightNormSparsifier
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    sp = WeightNormSparsifier(sparsity_level=0.5, sparse_block_shape=(1, 4), zeros_per_block=4)
    sp.prepare(m, [{"tensor_fqn": "0.weight"}])
    sp.step()
    mask = m[0].parametrizations.weight[0].mask.bool()
    res = connectome.analyze(m, input_shape=(1, 8), tracer=tracer)
    assert set(res.effective_masks) == {"0.weight", "2.weight"}
    assert torch.equal(res.masks["0.weight"], mask & (m[0].parametrizations.weight.original != 0))
    assert res.params_nonzero == int(mask.sum()) + 32
    assert not res.collapsed and res.params_effective > 0
    dead = ~mask.any(1)              # hidden units with every input pruned: their outgoing weights do nothing
    assert dead.any() and not res.effective_masks["2.weight"][:, dead].any()


def test_hook_style_weight_norm_and_spectral_norm_are_keyed_by_parameters():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = nn.Sequential(torch.nn.utils.weight_norm(nn.Linear(4, 4)), nn.ReLU(),
                          torch.nn.utils.spectral_norm(nn.Linear(4, 2)))
    with torch.no_grad():
        m[0].weight_g[1] = 0        # unit 1 of the first layer is zero: g * v / |v|
    m(torch.zeros(1, 4))            # the hooks recompute the weights
    res = connectome.analyze(m, input_shape=(1, 4))
    # weight norm: the computed weight, as for a parametrization (zeroing entries of v would rescale the
    # rest of their row, and a zero row of v is 0/0); spectral norm: prune's _orig form, and one effective
    # entry keeps every entry (zeroing one entry changes the spectral norm that divides them all)
    assert set(res.effective_masks) == {"0.weight", "2.weight"}
    assert not res.effective_masks["0.weight"][1].any() and res.effective_masks["0.weight"][0].all()
    assert res.effective_masks["2.weight"].all()


def test_parametrizations_are_keyed_by_the_module_weight():
    m = nn.Sequential(torch.nn.utils.parametrizations.weight_norm(nn.Linear(4, 4)), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        m[2].weight[:, 0] = 0
    for tracer in TRACERS:
        res = connectome.analyze(m, input_shape=(1, 4), tracer=tracer)
        assert set(res.effective_masks) == {"0.weight", "2.weight"}
        assert not res.effective_masks["0.weight"][0].any() and res.effective_masks["0.weight"][1:].all()

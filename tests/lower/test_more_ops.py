"""Hand-checked masks for addcmul/addcdiv, indexing and writes at computed places, histc, and mixture-of-experts
products (grouped_mm, bmm of per-row expert matrices, transformers' Mixtral), under every tracer; and the
soundness property on each (zeroing every weight called ineffective leaves the outputs bit-identical).

The models are those of the idiom corpus (tests/idioms/models_routing.py), with weights set by hand.
"""
import copy

import numpy as np
import pytest
import torch
from torch import nn

import connectome
from connectome.graph.lower.routing import Counts
from connectome.graph.status import Status
from idioms.models_routing import AddProduct, BmmExperts, Counted, GroupedExperts, RoutedTokens, RoutedWrites
from idioms.registry import apply_masks, outputs

TRACERS = ("fx", "export", "export-core", "auto")


def _set(layer: nn.Module, zero_rows: tuple = ()) -> None:
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.weight[list(zero_rows)] = 0


def _eff(res, name: str) -> list:
    return res.effective_masks[name].int().tolist()


def _sound(model: nn.Module, inputs: tuple, res, draws: int = 3) -> bool:
    """Zero every weight the analysis calls ineffective: outputs on the example and random inputs stay equal."""
    gen = torch.Generator().manual_seed(7)
    xs = [inputs] + [tuple(torch.randn(t.shape, generator=gen).to(t.dtype) if t.is_floating_point() else
                           torch.randint(0, 100, t.shape, generator=gen) for t in inputs) for _ in range(draws)]
    before = [outputs(model, x) for x in xs]
    masked = copy.deepcopy(model)
    assert apply_masks(masked, res.effective_masks) == []
    return all(all(torch.equal(a, b) for a, b in zip(u, v)) for u, v in zip(before, [outputs(masked, x) for x in xs]))


def _analyze(model: nn.Module, inputs: tuple, tracer: str):
    res = connectome.analyze(model, inputs, tracer=tracer)
    assert res.unsupported_ops == []
    assert _sound(model, inputs, res)
    return res


# ---- addcmul / addcdiv ----------------------------------------------------------------------------------

def _add_product(how: str, value: float = 0.5) -> AddProduct:
    m = AddProduct(how, value).eval()
    _set(m.k, (1, 2, 3))       # k alive at unit 0 only
    _set(m.h, (0,))            # h alive at 1, 2, 3
    _set(m.g, (1,))            # g alive at 0, 2, 3
    _set(m.out)
    return m


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("how", ["addcmul", "addcmul_method"])
def test_addcmul_product_is_silenced_by_a_dead_factor(how, tracer):
    # y = k + h * g: the product lives at 2, 3 (h1 meets a dead g1, g0 a dead h0); y at 0, 2, 3
    res = _analyze(_add_product(how), (torch.randn(2, 3),), tracer)
    assert _eff(res, "k.weight") == [[1, 1, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert _eff(res, "h.weight") == [[0, 0, 0], [0, 0, 0], [1, 1, 1], [1, 1, 1]]
    assert _eff(res, "g.weight") == [[0, 0, 0], [0, 0, 0], [1, 1, 1], [1, 1, 1]]
    assert _eff(res, "out.weight") == [[1, 0, 1, 1], [1, 0, 1, 1]]


@pytest.mark.parametrize("tracer", TRACERS)
def test_addcdiv_only_the_numerator_silences(tracer):
    # y = k + h / (|g| + 1): the quotient lives where h does (1, 2, 3); g matters where h is alive
    res = _analyze(_add_product("addcdiv"), (torch.randn(2, 3),), tracer)
    assert _eff(res, "h.weight") == [[0, 0, 0], [1, 1, 1], [1, 1, 1], [1, 1, 1]]
    assert _eff(res, "g.weight") == [[0, 0, 0], [0, 0, 0], [1, 1, 1], [1, 1, 1]]
    assert _eff(res, "out.weight") == [[1, 1, 1, 1], [1, 1, 1, 1]]


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_addcmul_with_value_zero_drops_the_product(tracer):
    res = _analyze(_add_product("addcmul", 0.0), (torch.randn(2, 3),), tracer)
    assert not res.effective_masks["h.weight"].any() and not res.effective_masks["g.weight"].any()
    assert _eff(res, "out.weight") == [[1, 0, 0, 0], [1, 0, 0, 0]]


# ---- indexing and writes at computed places ---------------------------------------------------------------

def _tokens(cls, how: str) -> nn.Module:
    m = cls(how).eval()
    _set(m.a, (1,))            # feature 1 of every token is dead
    _set(m.router)
    _set(m.out)
    return m


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("how", ["gather", "tensor_gather"])
def test_gather_by_a_computed_index_keeps_features_and_narrows(how, tracer):
    # p[i, f] = h[order[i], f] for f < 3: any token may be picked, feature 3 never is
    res = _analyze(_tokens(RoutedTokens, how), (torch.randn(4, 3),), tracer)
    assert _eff(res, "a.weight") == [[1, 1, 1], [0, 0, 0], [1, 1, 1], [0, 0, 0]]
    assert _eff(res, "out.weight") == [[1, 0, 1], [1, 0, 1]]
    assert _eff(res, "router.weight") == [[1, 1, 1]]       # the order it computes decides the outputs


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("how", ["take_along_dim", "index_select", "getitem"])
def test_token_picks_by_a_computed_index(how, tracer):
    res = _analyze(_tokens(RoutedTokens, how), (torch.randn(4, 3),), tracer)
    assert _eff(res, "a.weight") == [[1, 1, 1], [0, 0, 0], [1, 1, 1], [1, 1, 1]]
    assert _eff(res, "out.weight") == [[1, 0, 1, 1], [1, 0, 1, 1]]
    assert _eff(res, "router.weight") == [[1, 1, 1]]


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("how", ["index_add", "index_put", "index_copy", "scatter_add"])
def test_writes_at_computed_rows_keep_features(how, tracer):
    # rows land anywhere, features stay: the zeros they land in are known zeros, so feature 1 stays dead
    res = _analyze(_tokens(RoutedWrites, how), (torch.randn(4, 3),), tracer)
    assert _eff(res, "a.weight") == [[1, 1, 1], [0, 0, 0], [1, 1, 1], [1, 1, 1]]
    assert _eff(res, "out.weight") == [[1, 0, 1, 1], [1, 0, 1, 1]]
    assert _eff(res, "router.weight") == [[1, 1, 1]]


class TableLookup(nn.Module):
    """A constant table indexed by a computed id: the rows picked vary with the input (like an embedding)."""

    def __init__(self):
        super().__init__()
        self.router, self.head = nn.Linear(3, 4, bias=False), nn.Linear(2, 2, bias=False)
        self.table = nn.Parameter(torch.randn(4, 2))

    def forward(self, x):
        return self.head(self.table[self.router(x).argmax(-1)])


@pytest.mark.parametrize("tracer", TRACERS)
def test_a_constant_picked_by_a_computed_index_is_alive(tracer):
    torch.manual_seed(0)
    res = _analyze(TableLookup().eval(), (torch.randn(5, 3),), tracer)
    assert res.effective_masks["head.weight"].all() and res.effective_masks["router.weight"].all()


# ---- histc -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tracer", TRACERS)
def test_histc_is_a_supported_all_to_all(tracer):
    m = Counted().eval()
    _set(m.a, (1,))
    _set(m.out)
    _set(m.cnt)
    res = _analyze(m, (torch.randn(4, 3),), tracer)
    assert _eff(res, "a.weight") == [[1, 1, 1], [0, 0, 0], [1, 1, 1], [1, 1, 1]]
    assert _eff(res, "out.weight") == [[1, 0, 1, 1], [1, 0, 1, 1]]
    assert res.effective_masks["cnt.weight"].all()        # every bin counts the live features


def test_counts_op():
    op = Counts(torch.zeros(3), [torch.zeros(2, 2)])
    one = Status.from_full(np.array([[True, False], [False, False]]), 1)
    out = op.forward([one])
    assert out.full().all() and not out.zero and op.supported
    assert not op.forward([Status.uniform((2, 2), 1, False)]).any()
    assert op.backward([one], out, Status.uniform((3,), 0, True))[0].full().all()


# ---- experts -------------------------------------------------------------------------------------------------

def _experts(m: nn.Module, dead: list[tuple[str, tuple]]) -> nn.Module:
    with torch.no_grad():
        for name, index in dead:
            getattr(m, name)[index] = 0
    return m.eval()


@pytest.mark.parametrize("tracer", TRACERS)
def test_bmm_expert_mlp_is_exact_per_expert(tracer):
    # up (E, hidden, d), down (E, d, hidden): expert 0's unit 1 is dead from input, expert 2's unit 4 to output
    torch.manual_seed(0)
    m = _experts(BmmExperts("wx"), [("up", (0, 1)), ("down", (2, slice(None), 4))])
    res = _analyze(m, (torch.randn(6, 4),), tracer)
    up, down = res.effective_masks["up"], res.effective_masks["down"]
    want_up, want_down = m.up != 0, m.down != 0
    want_up[2, 4] = False
    want_down[0, :, 1] = False
    assert torch.equal(up, want_up) and torch.equal(down, want_down)
    assert res.effective_masks["router.weight"].all()


@pytest.mark.parametrize("tracer", TRACERS)
def test_bmm_expert_mlp_with_transposed_matrices(tracer):
    torch.manual_seed(0)
    m = _experts(BmmExperts("xw"), [("up", (0, slice(None), 1)), ("down", (2, 4))])
    res = _analyze(m, (torch.randn(6, 4),), tracer)
    want_up, want_down = m.up != 0, m.down != 0
    want_up[2, :, 4] = False
    want_down[0, 1] = False
    assert torch.equal(res.effective_masks["up"], want_up) and torch.equal(res.effective_masks["down"], want_down)


@pytest.mark.parametrize("tracer", TRACERS)
def test_grouped_mm_expert_mlp_is_exact_per_expert(tracer):
    torch.manual_seed(0)
    m = _experts(GroupedExperts(), [("up", (1, slice(None), 3)), ("down", (0, 5))]).to(torch.bfloat16)
    res = _analyze(m, (torch.randn(8, 16).to(torch.bfloat16),), tracer)
    want_up, want_down = m.up != 0, m.down != 0
    want_up[0, :, 5] = False
    want_down[1, 3] = False
    assert torch.equal(res.effective_masks["up"], want_up) and torch.equal(res.effective_masks["down"], want_down)
    assert res.effective_masks["router.weight"].all()


class FlippedExperts(GroupedExperts):
    """Rows reversed between the two products: a row meets different experts in each, so no pair is formed."""

    def forward(self, x):
        ids_, order = torch.sort(self.router(x).argmax(-1))
        offs = torch.cumsum(torch.histc(ids_.float(), bins=2, min=0, max=1), 0).to(torch.int32)
        h = torch.relu(torch.nn.functional.grouped_mm(x[order], self.up, offs=offs)).flip(0)
        return torch.nn.functional.grouped_mm(h, self.down, offs=offs)


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_a_middle_that_moves_rows_is_not_paired(tracer):
    # each product alone: a unit is dead only if dead in every expert, so expert 1's dead unit 3 still counts
    torch.manual_seed(0)
    m = _experts(FlippedExperts(), [("up", (1, slice(None), 3))]).to(torch.bfloat16)
    res = _analyze(m, (torch.randn(8, 16).to(torch.bfloat16),), tracer)
    assert torch.equal(res.effective_masks["down"], m.down != 0)


def _mixtral(impl: str) -> nn.Module:
    from idioms.models_routing import _MIXTRAL_KILL, _mixtral as build
    m = build(impl)()
    _MIXTRAL_KILL(m)
    return m


@pytest.mark.parametrize("tracer", ["export", "export-core", "auto"])
@pytest.mark.parametrize("impl", ["grouped_mm", "batched_mm"])
def test_mixtral_experts_are_exact_per_expert(impl, tracer):
    pytest.importorskip("transformers")
    m = _mixtral(impl)
    res = _analyze(m, (torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(0)),), tracer)
    e = "model.layers.0.mlp.experts."
    gu, dn = res.effective_masks[e + "gate_up_proj"], res.effective_masks[e + "down_proj"]
    assert not dn[1, :, 5].any() and dn[0, :, 5].all()          # expert 1's unit 5 is dead from input
    assert not gu[2, [7, 71]].any() and gu[0, [7, 71]].all()      # expert 2's unit 7 is dead to output
    assert int(gu.sum()) == gu.numel() - 2 * 32 - 2 * 32 and int(dn.sum()) == dn.numel() - 2 * 32
    assert res.effective_masks["model.layers.0.mlp.gate.weight"].all()   # the router


# ---- weight-standardised convolutions (timm's StdConv2d, ScaledStdConv2d: BiT, NFNets) ----------------------

@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("kind", ["StdConv2d", "ScaledStdConv2d"])
def test_standardised_conv_row_is_effective_where_its_channel_is_reached(kind, tracer):
    # standardisation mixes a row's entries: a live row's entry reading a dead channel still matters (it moves
    # the row's mean and std); a row whose channel reaches no output is ineffective as a whole
    layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), nn.ReLU(), getattr(layers, kind)(2, 3, 1, bias=False), nn.ReLU(),
                      nn.Conv2d(3, 1, 1, bias=False)).eval()
    with torch.no_grad():
        m[0].weight[1] = 0
        m[4].weight[:, 2] = 0
    res = _analyze(m, (torch.randn(1, 2, 3, 3),), tracer)
    assert res.effective_masks["2.weight"].flatten(1).int().tolist() == [[1, 1], [1, 1], [0, 0]]

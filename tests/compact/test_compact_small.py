"""Compaction on hand-made nets: what is removed, what is folded and where, each figure worked out by hand."""

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from connectome.analysis import analyze
from connectome.compact import CompactionError, compact


def _same(a: nn.Module, b: nn.Module, shape, n: int = 4) -> float:
    a, b = a.double().eval(), b.double().eval()
    worst = 0.0
    with torch.no_grad():
        for i in range(n):
            x = torch.randn(shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
            ya, yb = a(x), b(x)
            worst = max(worst, float((ya - yb).abs().max() / ya.abs().max()))
    return worst


def test_a_unit_fed_only_by_its_bias_folds_its_constant_into_the_next_bias():
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        m[0].weight[2] = 0  # unit 2 sees no input: relu(bias) = 0.75 always
        m[0].bias[2] = 0.75
    small = compact(m, input_shape=(1, 3))
    assert small.get_submodule("0").out_features == 3
    assert small.get_submodule("2").in_features == 3
    want = m[2].bias.double() + 0.75 * m[2].weight[:, 2].double()  # folded in float64, then rounded
    assert torch.equal(small.get_submodule("2").bias, want.float().detach())
    assert small.compaction.folded == ["2"]
    assert small.compaction.error <= 1e-12
    assert _same(m, small, (5, 3)) <= 1e-6


def test_the_fold_adds_a_bias_where_the_next_layer_has_none():
    m = nn.Sequential(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        m[0].weight[0] = 0
        m[0].bias[0] = -1.0
    small = compact(m, input_shape=(1, 2))
    b = small.get_submodule("2").bias
    assert b is not None and b.dtype == torch.float32
    assert torch.allclose(b, torch.sigmoid(torch.tensor(-1.0)) * m[2].weight[:, 0])
    assert _same(m, small, (3, 2)) <= 1e-6


def test_units_that_reach_no_output_go_and_nothing_is_folded():
    m = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    with torch.no_grad():
        m[2].weight[:, [1, 4]] = 0
    small = compact(m, input_shape=(1, 4))
    assert small.compaction.layers["0"] == {"in": [4, 4], "out": [4, 6]}
    assert small.compaction.params == (6 * 4 + 6 + 2 * 6 + 2, 4 * 4 + 4 + 2 * 4 + 2)
    assert small.compaction.folded == []
    assert torch.equal(small.get_submodule("0").weight, m[0].weight[[0, 2, 3, 5]].detach())


class Residual(nn.Module):
    """Two convolutions added: the channels of the sum are one decision for both."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 4, 3, padding=1)
        self.b = nn.Conv2d(2, 4, 1)
        self.head = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        return self.head(torch.relu(self.a(x) + self.b(x)))


def test_channels_joined_by_an_add_are_removed_only_when_dead_in_every_branch():
    m = Residual()
    with torch.no_grad():
        m.head.weight[:, [1, 3]] = 0  # channels 1 and 3 of the sum reach no output
        m.a.weight[0] = 0  # channel 0 is dead in branch a only: it stays (b feeds it)
        m.a.bias[0] = 0
    small = compact(m, input_shape=(1, 2, 6, 6))
    assert small.compaction.layers["b"]["out"] == [2, 4]
    # a's row 0 is not computed: its channel is filled with the constant 0 (the row saw no input)
    assert small.compaction.layers["a"]["out"] == [1, 4]
    assert _same(m, small, (2, 2, 6, 6)) <= 1e-12
    r = analyze(small, input_shape=(1, 2, 6, 6))
    assert all(row["dead_in"] == row["dead_out"] == 0 for row in r.layers)


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(1, 3, 1), nn.Conv2d(1, 2, 1), nn.Conv2d(5, 2, 1)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], 1))


def test_concatenated_channels_map_back_to_the_layer_that_made_them():
    m = Concat()
    with torch.no_grad():
        m.head.weight[:, [1, 4]] = 0  # a's channel 1 and b's channel 1
    small = compact(m, input_shape=(1, 1, 4, 4))
    assert small.compaction.layers["a"]["out"] == [2, 3]
    assert small.compaction.layers["b"]["out"] == [1, 2]
    assert small.compaction.layers["head"]["in"] == [3, 5]
    assert _same(m, small, (2, 1, 4, 4)) <= 1e-12


def test_a_nonzero_constant_into_a_padded_convolution_is_kept_not_folded():
    # the constant would meet zero padding at the borders: no bias can stand in for it
    m = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.Conv2d(2, 1, 3, padding=1))
    with torch.no_grad():
        m[0].weight[1] = 0
        m[0].bias[1] = 0.5
    small = compact(m, input_shape=(1, 1, 5, 5))
    assert small.compaction.kept_constant == 1
    assert small.get_submodule("2").in_channels == 2
    assert _same(m, small, (2, 1, 5, 5)) <= 1e-12


def test_a_constant_into_an_unpadded_convolution_is_folded_over_its_kernel():
    m = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.Conv2d(2, 1, 3))
    with torch.no_grad():
        m[0].weight[1] = 0
        m[0].bias[1] = 0.5
    small = compact(m, input_shape=(1, 1, 5, 5))
    assert small.get_submodule("2").in_channels == 1
    want = m[2].bias + 0.5 * m[2].weight[:, 1].sum()
    assert torch.allclose(small.get_submodule("2").bias, want.detach(), rtol=0, atol=1e-7)
    assert small.compaction.error <= 1e-12  # checked in float64, before the fold is rounded to float32
    assert _same(m, small, (2, 1, 5, 5)) <= 1e-6


def test_a_depthwise_convolution_loses_whole_channels_and_its_groups_with_them():
    m = nn.Sequential(nn.Conv2d(1, 4, 1), nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(4, 1, 1))
    with torch.no_grad():
        m[2].weight[:, 2] = 0
    small = compact(m, input_shape=(1, 1, 5, 5))
    dw = small.get_submodule("1")
    assert (dw.in_channels, dw.out_channels, dw.groups) == (3, 3, 3)
    assert _same(m, small, (2, 1, 5, 5)) <= 1e-12


def test_a_grouped_convolution_loses_whole_groups_with_their_input_channels():
    m = nn.Sequential(nn.Conv2d(1, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=4), nn.Conv2d(8, 2, 1))
    with torch.no_grad():
        m[3].weight[:, [4, 5]] = 0  # group 2's outputs reach nothing: its inputs 4, 5 feed nothing else
        m[2].weight[1] = 0  # group 0 loses a row but lives on
    small = compact(m, input_shape=(1, 1, 5, 5))
    g = small.get_submodule("2")
    assert (g.in_channels, g.groups, g.weight.shape[1]) == (6, 3, 2)
    assert small.compaction.layers["0"]["out"] == [6, 8]
    assert small.compaction.layers["3"]["in"] == [6, 8]
    assert g.out_channels == 6  # groups stay of one size: group 0's dead row stays (zero weights)
    assert _same(m, small, (2, 1, 5, 5)) <= 1e-12
    res = analyze(small, input_shape=(1, 1, 5, 5))
    assert [(r["name"], r["dead_in"], r["dead_out"]) for r in res.layers] == [("0", 0, 0), ("2", 1, 0), ("3", 0, 0)]


def test_prune_masks_are_carried_over_to_the_kept_weights():
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    mask = torch.ones(4, 3)
    mask[1] = 0
    prune.custom_from_mask(m[0], "weight", mask)
    mask[0, 0] = 0  # the mask itself is changed after: the compaction reads the model's own
    small = compact(m, input_shape=(1, 3))
    lin = small.get_submodule("0")
    assert lin.out_features == 3 and hasattr(lin, "weight_mask")
    assert lin.weight_mask.tolist() == [[1.0, 1.0, 1.0]] * 3
    assert "weight_orig" in dict(lin.named_parameters())
    assert not hasattr(m[0].weight_orig, "_compacted")  # the input model is untouched
    assert m[0].weight_orig.shape == (4, 3)


def test_the_result_exports_and_the_input_model_is_unchanged():
    m = Residual()
    with torch.no_grad():
        m.head.weight[:, 0] = 0
    before = {k: v.clone() for k, v in m.state_dict().items()}
    small = compact(m, input_shape=(1, 2, 6, 6))
    ep = torch.export.export(small, (torch.randn(1, 2, 6, 6),))
    x = torch.randn(1, 2, 6, 6)
    assert torch.allclose(ep.module()(x), m(x), atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_a_collapsed_network_is_refused():
    m = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        m[2].weight.zero_()
    with pytest.raises(CompactionError, match="collapsed"):
        compact(m, input_shape=(1, 3))


def test_a_module_called_twice_is_sliced_once_for_both_calls():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.f, self.g = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.g(torch.relu(self.f(torch.relu(self.f(x)))))

    m = Twice()
    with torch.no_grad():
        m.g.weight[:, 3] = 0
    small = compact(m, input_shape=(1, 4))
    assert _same(m, small, (3, 4)) <= 1e-12


def test_align_keeps_every_width_a_multiple_and_the_outputs_the_same():
    m = nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 24, 1), nn.ReLU(), nn.Conv2d(24, 2, 1))
    with torch.no_grad():
        m[2].weight[:, 3:14] = 0  # 11 of the first 32 channels reach no output
        m[4].weight[:, 20:] = 0  # 4 of the next 24
    small = compact(m, input_shape=(1, 3, 8, 8), align=8)
    assert small.get_submodule("0").out_channels == 24  # 21 kept, rounded up to 24
    assert small.get_submodule("2").out_channels == 24  # 20 kept: all 24 (no multiple of 8 below)
    assert _same(m, small, (2, 3, 8, 8)) <= 1e-12
    exact = compact(m, input_shape=(1, 3, 8, 8))
    assert (exact.get_submodule("0").out_channels, exact.get_submodule("2").out_channels) == (21, 20)


def test_a_layer_called_twice_on_different_constants_keeps_the_channel():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.h = nn.Linear(2, 3), nn.Linear(2, 3), nn.Linear(3, 2)

        def forward(self, x):
            return self.h(torch.relu(self.a(x))) + self.h(torch.relu(self.b(x)))

    m = Shared()
    with torch.no_grad():
        m.a.weight[0], m.a.bias[0] = 0, 1.0  # channel 0 holds 1 in the first call, 2 in the second
        m.b.weight[0], m.b.bias[0] = 0, 2.0
    small = compact(m, input_shape=(1, 2))
    assert small.get_submodule("h").in_features == 3 and small.compaction.kept_constant == 1
    assert _same(m, small, (4, 2)) <= 1e-12
    with torch.no_grad():
        m.b.bias[0] = 1.0  # the same constant in both calls: folded once, for both
    small = compact(m, input_shape=(1, 2))
    assert small.get_submodule("h").in_features == 2
    assert small.compaction.error <= 1e-12


class Encoder(nn.Module):
    """A block as torchvision's ViT has it: attention called without weights, then an MLP."""

    def __init__(self, weights: bool = False):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
        self.weights = weights

    def forward(self, x):
        y, _ = self.attn(x, x, x, need_weights=self.weights)
        return self.mlp(x + y)


def test_attention_projections_lose_their_dead_rows_and_heads_keep_their_width():
    m = Encoder()
    with torch.no_grad():
        m.attn.in_proj_weight[1] = 0  # a query row: its channel holds its bias
        m.attn.out_proj.weight[3] = 0  # an output row: its channel holds its bias
    small = compact(m, input_shape=(1, 5, 8))
    assert small.compaction.layers["attn.q"]["out"] == [7, 8]
    assert small.compaction.layers["attn.out"]["out"] == [7, 8]
    assert small.compaction.error <= 1e-12
    res = analyze(small, input_shape=(1, 5, 8))
    assert all(row["dead_in"] == row["dead_out"] == 0 for row in res.layers)


def test_attention_whose_weights_are_used_stays_whole_and_the_rest_is_compacted():
    m = Encoder(weights=True)
    with torch.no_grad():
        m.mlp[2].weight[:, :4] = 0
    small = compact(m, input_shape=(1, 5, 8))
    assert "attn.q" not in small.compaction.layers
    assert len(small.compaction.notes) == 1 and "attention kept whole" in small.compaction.notes[0]
    assert "no attention weights" in small.compaction.notes[0]
    assert small.compaction.layers["mlp.0"]["out"] == [12, 16]
    assert small.compaction.error <= 1e-12


def test_a_head_that_reaches_no_output_goes_whole():
    m = Encoder()
    with torch.no_grad():
        m.attn.out_proj.weight[:, 4:] = 0  # head 1's outputs are read by nothing
    small = compact(m, input_shape=(1, 5, 8))
    for p in "qkv":
        assert small.compaction.layers[f"attn.{p}"]["out"] == [4, 8]
    assert small.compaction.layers["attn.out"]["in"] == [4, 8]
    assert small.compaction.params == (568, 568 - 3 * 4 * 9 - 8 * 4)
    assert small.compaction.error <= 1e-12
    res = analyze(small, input_shape=(1, 5, 8))
    assert all(row["dead_in"] == row["dead_out"] == 0 for row in res.layers)


def test_a_head_whose_values_see_no_input_folds_their_bias_into_the_output_projection():
    m = Encoder()
    with torch.no_grad():
        m.attn.in_proj_bias.normal_(generator=torch.Generator().manual_seed(0))
        m.attn.out_proj.bias.normal_(generator=torch.Generator().manual_seed(1))
        m.attn.in_proj_weight[16 + 4 :] = 0  # head 1 averages a constant: it outputs its value bias
    small = compact(m, input_shape=(1, 5, 8))
    assert small.compaction.layers["attn.out"]["in"] == [4, 8]
    assert small.compaction.folded == ["attn.out"]
    b = m.attn.out_proj
    want = b.bias.double() + b.weight[:, 4:].double() @ m.attn.in_proj_bias[20:].double()
    assert torch.equal(small.get_submodule("attn.out").bias, want.float().detach())
    assert _same(m, small, (3, 5, 8)) <= 1e-6


class Indexed(nn.Module):
    """Channels picked by a fixed index: directly (``[..., 4:]``), or a block of an unflatten."""

    def __init__(self, blocks: bool):
        super().__init__()
        self.a, self.o, self.blocks = nn.Linear(6, 12), nn.Linear(8 if not blocks else 4, 3), blocks

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.o(h.unflatten(-1, (-1, 4))[..., 1, :] if self.blocks else h[..., 4:])


@pytest.mark.parametrize("blocks", [False, True])
def test_channels_picked_by_a_fixed_index_keep_their_places(blocks):
    torch.manual_seed(0)
    m = Indexed(blocks).eval()
    with torch.no_grad():
        m.a.weight[5] = 0  # a picked channel sees no input: filled with its constant, not removed
    small = compact(m, input_shape=(1, 5, 6))
    assert small.compaction.layers["a"]["out"][0] < 12  # rows nothing reads are not computed
    assert _same(m, small, (2, 5, 6)) <= 1e-12

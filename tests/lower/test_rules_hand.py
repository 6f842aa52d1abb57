"""Hand-computed effective masks for every lowering family, on networks small enough to check by eye."""
import torch
import torch.nn.functional as F
from torch import nn

import connectome


def eff(model, shape, **kw):
    return connectome.analyze(model, input_shape=shape, **kw)


def set_w(layer, values):
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(values, dtype=torch.float32).reshape(layer.weight.shape))
    return layer


def test_linear_chain_dead_from_input_and_to_output():
    # x(2) -> h(3) -> y(2). h0 has no input weight (dead from input); h2 has no output weight (dead to output).
    a = set_w(nn.Linear(2, 3, bias=False), [[0, 0], [1, 1], [1, 0]])
    b = set_w(nn.Linear(3, 2, bias=False), [[1, 1, 0], [1, 0, 0]])
    res = eff(nn.Sequential(a, nn.ReLU(), b), (1, 2))
    assert res.effective_masks["0.weight"].tolist() == [[0, 0], [1, 1], [0, 0]]
    assert res.effective_masks["2.weight"].tolist() == [[0, 1, 0], [0, 0, 0]]
    assert res.layers[0]["dead_in"] == 1 and res.layers[0]["dead_out"] == 1  # h0 still reaches y; h2 does not


def test_biases_do_not_make_units_alive():
    a = set_w(nn.Linear(1, 2), [[1], [0]])
    nn.init.constant_(a.bias, 1.0)
    b = set_w(nn.Linear(2, 1), [[1, 1]])
    res = eff(nn.Sequential(a, b), (1, 1))
    assert res.effective_masks["1.weight"].tolist() == [[1, 0]]  # unit 1 is a constant


def test_conv_padding_only_taps():
    # 3x3 conv, padding 1, on a 1x1 input: only the centre tap reads a real pixel.
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    nn.init.ones_(conv.weight)
    m = eff(nn.Sequential(conv), (1, 1, 1, 1)).effective_masks["0.weight"][0, 0]
    assert m.tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_conv_stride_reads_only_some_taps():
    # 1-D: n=2, k=3, stride 2, pad 1 -> one output reading positions -1, 0, 1: taps 1 and 2 are real.
    conv = nn.Conv1d(1, 1, 3, stride=2, padding=1, bias=False)
    nn.init.ones_(conv.weight)
    assert eff(nn.Sequential(conv), (1, 1, 2)).effective_masks["0.weight"][0, 0].tolist() == [0, 1, 1]


def test_conv_dilation_taps():
    # n=3, k=3, dilation 2, pad 2: output y reads y-2, y, y+2; tap 0 is real for y=2, tap 2 for y=0.
    conv = nn.Conv1d(1, 1, 3, padding=2, dilation=2, bias=False)
    nn.init.ones_(conv.weight)
    assert eff(nn.Sequential(conv), (1, 1, 3)).effective_masks["0.weight"][0, 0].tolist() == [1, 1, 1]
    assert eff(nn.Sequential(conv), (1, 1, 1)).effective_masks["0.weight"][0, 0].tolist() == [0, 1, 0]


def test_position_dependent_liveness_is_exact():
    # c1 sees the input only through its tap 0 (reads y-1): c1 is dead at y=0. c2 reads c1 only through
    # tap 0 too, at y=0 (padding) and y=1 (c1's dead position) of a 2-long map: that weight does nothing.
    c1 = nn.Conv1d(1, 1, 3, padding=1, bias=False)
    c2 = nn.Conv1d(1, 1, 3, padding=1, bias=False)
    set_w(c1, [1, 0, 0])
    set_w(c2, [1, 0, 1])
    res = eff(nn.Sequential(c1, c2), (1, 1, 2))
    assert res.effective_masks["1.weight"][0, 0].tolist() == [0, 0, 1]


def test_grouped_and_depthwise_conv():
    # groups=2: out channels 0,1 see in channels 0,1; out 2,3 see 2,3. In channel 2 is dead (zero input weight).
    stem = set_w(nn.Conv2d(1, 4, 1, bias=False), [1, 1, 0, 1])
    g = nn.Conv2d(4, 4, 1, groups=2, bias=False)
    nn.init.ones_(g.weight)
    head = set_w(nn.Conv2d(4, 1, 1, bias=False), [1, 1, 1, 0])
    res = eff(nn.Sequential(stem, g, head), (1, 1, 2, 2))
    # g.weight[o, j]: o=2 sees in 2 (dead) and in 3; o=3 is dead to output.
    assert res.effective_masks["1.weight"].flatten().tolist() == [1, 1, 1, 1, 0, 1, 0, 0]
    dw = nn.Conv2d(4, 4, 1, groups=4, bias=False)
    nn.init.ones_(dw.weight)
    res = eff(nn.Sequential(stem, dw, head), (1, 1, 2, 2))
    assert res.effective_masks["1.weight"].flatten().tolist() == [1, 1, 0, 0]


def test_conv_transpose_weight_layout():
    # ConvTranspose weight is (in, out, k): in channel 1 is dead, out channel 0 reaches the output.
    stem = set_w(nn.Conv1d(1, 2, 1, bias=False), [1, 0])
    up = nn.ConvTranspose1d(2, 2, 2, stride=2, bias=False)
    nn.init.ones_(up.weight)
    head = set_w(nn.Conv1d(2, 1, 1, bias=False), [1, 0])
    res = eff(nn.Sequential(stem, up, head), (1, 1, 3))
    assert res.effective_masks["1.weight"].tolist() == [[[1, 1], [0, 0]], [[0, 0], [0, 0]]]


def test_batchnorm_zero_scale_cuts_channel():
    conv = nn.Conv2d(1, 2, 1, bias=False)
    nn.init.ones_(conv.weight)
    bn = nn.BatchNorm2d(2).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 0.0]))
    head = nn.Conv2d(2, 1, 1, bias=False)
    nn.init.ones_(head.weight)
    res = eff(nn.Sequential(conv, bn, head), (1, 1, 2, 2))
    assert res.effective_masks["0.weight"].flatten().tolist() == [1, 0]
    assert res.effective_masks["2.weight"].flatten().tolist() == [1, 0]


def test_groupnorm_and_layernorm_mix_their_groups():
    stem = set_w(nn.Conv2d(1, 4, 1, bias=False), [1, 0, 0, 0])
    head = nn.Conv2d(4, 1, 1, bias=False)
    nn.init.ones_(head.weight)
    res = eff(nn.Sequential(stem, nn.GroupNorm(2, 4), head), (1, 1, 2, 2))
    # channel 1 shares channel 0's group statistics, so it carries signal; channels 2, 3 stay dead
    assert res.effective_masks["2.weight"].flatten().tolist() == [1, 1, 0, 0]
    lin = set_w(nn.Linear(1, 3, bias=False), [[1], [0], [0]])
    out = set_w(nn.Linear(3, 1, bias=False), [[1, 1, 1]])
    res = eff(nn.Sequential(lin, nn.LayerNorm(3), out), (1, 1))
    assert res.effective_masks["2.weight"].tolist() == [[1, 1, 1]]


def test_instance_norm_keeps_channels_apart():
    stem = set_w(nn.Conv1d(1, 2, 1, bias=False), [1, 0])
    head = nn.Conv1d(2, 1, 1, bias=False)
    nn.init.ones_(head.weight)
    res = eff(nn.Sequential(stem, nn.InstanceNorm1d(2), head), (1, 1, 4))
    assert res.effective_masks["2.weight"].flatten().tolist() == [1, 0]


def test_gate_semantics_x_times_sigmoid():
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.x = set_w(nn.Linear(1, 2, bias=False), [[1], [0]])   # x1 is dead (zero)
            self.s = set_w(nn.Linear(1, 2, bias=False), [[0], [1]])   # s0 is dead (a constant gate)
            self.out = set_w(nn.Linear(2, 1, bias=False), [[1, 1]])

        def forward(self, v):
            return self.out(self.x(v) * torch.sigmoid(self.s(v)))
    res = eff(Gate(), (1, 1))
    # x0 passes through the constant gate; s1 gates a zero, so its weight does nothing.
    assert res.effective_masks["x.weight"].flatten().tolist() == [1, 0]
    assert res.effective_masks["s.weight"].flatten().tolist() == [0, 0]
    assert res.effective_masks["out.weight"].tolist() == [[1, 0]]


class TwoBranch(nn.Module):
    """Two features from one input: ``a`` has feature 1 cut, ``b`` has both."""

    def __init__(self):
        super().__init__()
        self.a = set_w(nn.Linear(1, 2, bias=False), [[1], [0]])
        self.b = set_w(nn.Linear(1, 2, bias=False), [[1], [1]])


def test_product_of_zero_factor_is_dead_and_division():
    class P(TwoBranch):
        def __init__(self):
            super().__init__()
            self.out = set_w(nn.Linear(2, 1, bias=False), [[1, 1]])

        def forward(self, v):
            return self.out(self.a(v) * self.b(v) + self.a(v) / (1 + self.b(v).abs()) - self.a(v))
    res = eff(P(), (1, 1))
    assert res.effective_masks["b.weight"].flatten().tolist() == [1, 0]  # b1 multiplies/divides a zero
    assert res.effective_masks["out.weight"].tolist() == [[1, 0]]


def test_pooling_windows():
    # max pool 2, stride 2 on length 3 drops position 2; a unit alive only there is lost.
    c = set_w(nn.Conv1d(1, 1, 3, padding=1, bias=False), [0, 0, 1])  # y reads y+1: alive at 0, 1
    head = nn.Conv1d(1, 1, 1, bias=False)
    nn.init.ones_(head.weight)
    for pool in (nn.MaxPool1d(2), nn.AvgPool1d(2)):
        res = eff(nn.Sequential(c, pool, head), (1, 1, 3))
        assert res.effective_masks["0.weight"].flatten().tolist() == [0, 0, 1]
    res = eff(nn.Sequential(c, nn.AdaptiveAvgPool1d(1), head), (1, 1, 3))
    assert res.effective_masks["2.weight"].flatten().tolist() == [1]


def test_cat_split_chunk_getitem():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = set_w(nn.Linear(1, 2, bias=False), [[1], [0]])
            self.b = set_w(nn.Linear(1, 2, bias=False), [[0], [1]])
            self.out = nn.Linear(2, 1, bias=False)
            nn.init.ones_(self.out.weight)

        def forward(self, v):
            z = torch.cat([self.a(v), self.b(v)], dim=1)      # [a0, a1(dead), b0(dead), b1]
            p, q = torch.split(z, 2, dim=1)                   # p = [a0, dead], q = [dead, b1]
            r = torch.stack(torch.chunk(q, 2, dim=1), 0)[:, :, 0]  # (2, 1): [dead, b1]
            return self.out(p) + self.out(r.t())
    res = eff(M(), (1, 1))
    assert res.effective_masks["a.weight"].flatten().tolist() == [1, 0]
    assert res.effective_masks["b.weight"].flatten().tolist() == [0, 1]
    assert res.effective_masks["out.weight"].tolist() == [[1, 1]]


def test_flatten_maps_channels_to_features_exactly():
    # conv -> flatten -> linear: feature f = c * (H*W) + position; channel 1 is dead.
    conv = set_w(nn.Conv2d(1, 2, 1, bias=False), [1, 0])
    lin = nn.Linear(2 * 2 * 2, 1, bias=False)
    nn.init.ones_(lin.weight)
    res = eff(nn.Sequential(conv, nn.Flatten(), lin), (1, 1, 2, 2))
    assert res.effective_masks["2.weight"].flatten().tolist() == [1, 1, 1, 1, 0, 0, 0, 0]


def test_permute_transpose_view_and_channel_shuffle():
    stem = set_w(nn.Conv2d(1, 4, 1, bias=False), [1, 1, 0, 0])
    head = set_w(nn.Conv2d(4, 1, 1, bias=False), [1, 0, 1, 0])

    class Shuffle(nn.Module):
        def forward(self, x):
            n, c, h, w = x.shape
            x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)  # [0,2,1,3]
            return x.permute(0, 2, 3, 1).permute(0, 3, 1, 2)
    res = eff(nn.Sequential(stem, Shuffle(), head), (1, 1, 2, 2))
    # after the shuffle channel k holds [0, 2, 1, 3][k]; head reads shuffled 0 (stem 0) and 2 (stem 1)
    assert res.effective_masks["0.weight"].flatten().tolist() == [1, 1, 0, 0]
    assert res.effective_masks["2.weight"].flatten().tolist() == [1, 0, 1, 0]
    res = eff(nn.Sequential(stem, nn.ChannelShuffle(2), head), (1, 1, 2, 2))
    assert res.effective_masks["0.weight"].flatten().tolist() == [1, 1, 0, 0]


def test_upsample_spreads_positions():
    c = set_w(nn.Conv1d(1, 1, 3, padding=1, bias=False), [1, 0, 0])   # alive at y >= 1 of 2
    tail = set_w(nn.Conv1d(1, 1, 3, padding=1, bias=False), [1, 0, 0])  # reads y-1
    res = eff(nn.Sequential(c, nn.Upsample(scale_factor=2), tail), (1, 1, 2))
    # upsampled: positions 2, 3 alive; tail at y reads y-1 -> y=3 reads 2: alive, so tail's tap is effective
    assert res.effective_masks["2.weight"].flatten().tolist() == [1, 0, 0]
    res = eff(nn.Sequential(c, tail), (1, 1, 2))  # without upsampling, y=1 reads 0: dead
    assert res.effective_masks["1.weight"].flatten().tolist() == [0, 0, 0]


def test_embedding_rows_reach_features():
    emb = nn.Embedding(3, 2)
    with torch.no_grad():
        emb.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]))
    head = set_w(nn.Linear(2, 1, bias=False), [[1, 1]])
    res = connectome.analyze(nn.Sequential(emb, head), torch.zeros(1, 4, dtype=torch.long))
    assert res.effective_masks["0.weight"].tolist() == [[1, 0], [1, 0], [0, 0]]
    assert res.effective_masks["1.weight"].tolist() == [[1, 0]]


def test_matmul_bmm_einsum_of_activations():
    class M(TwoBranch):
        def forward(self, v):
            a, b = self.a(v), self.b(v)
            outer = a.unsqueeze(2) @ b.unsqueeze(1)               # (1, 2, 2): row 1 is zero
            e = torch.einsum("bij,bj->bi", outer, b)
            return torch.bmm(outer, b.unsqueeze(2)).squeeze(2) + e
    res = eff(M(), (1, 1))
    assert res.effective_masks["a.weight"].flatten().tolist() == [1, 0]
    assert res.effective_masks["b.weight"].flatten().tolist() == [1, 1]


def test_multihead_attention_heads_are_separate():
    E = 4
    mha = nn.MultiheadAttention(E, 2, batch_first=True, bias=False)
    with torch.no_grad():
        mha.in_proj_weight.fill_(1.0)
        mha.in_proj_weight[2 * E + 2:] = 0       # v features 2, 3 (head 1) are dead
        mha.out_proj.weight.fill_(1.0)

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]
    res = connectome.analyze(M(), input_shape=(1, 3, E))
    w = res.effective_masks["mha.in_proj_weight"]
    assert w[:2].all() and not w[2:4].any()          # q features of head 1 only matter if v varies
    assert w[E:E + 2].all() and not w[E + 2:2 * E].any()
    assert w[2 * E:2 * E + 2].all() and not w[2 * E + 2:].any()
    assert res.effective_masks["mha.out_proj.weight"][:, :2].all()
    assert not res.effective_masks["mha.out_proj.weight"][:, 2:].any()


def test_sdpa_value_drives_output():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = set_w(nn.Linear(1, 2, bias=False), [[1], [1]])
            self.v = set_w(nn.Linear(1, 2, bias=False), [[0], [0]])   # v dead: output is zero

        def forward(self, x):
            return F.scaled_dot_product_attention(self.q(x), self.q(x), self.v(x))
    res = eff(M(), (1, 3, 1))
    assert res.collapsed and not res.effective_masks["q.weight"].any()


def test_unknown_op_is_all_to_all_and_reported():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = set_w(nn.Linear(2, 2, bias=False), [[1, 0], [0, 0]])
            self.b = set_w(nn.Linear(2, 2, bias=False), [[1, 1], [1, 1]])

        def forward(self, x):
            return self.b(torch.renorm(self.a(x), 2, 0, 1.0))
    res = eff(M(), (1, 2))
    assert res.unsupported_ops and "renorm" in res.unsupported_ops[0]["op"]
    assert res.effective_masks["b.weight"].all()  # conservative: everything downstream is alive

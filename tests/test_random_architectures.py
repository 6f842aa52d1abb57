"""Random architectures (conv, residual, concat, gates, pooling, linear) with random masks: the analysis
must equal the path-count oracle exactly, which implies soundness."""
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import connectome
from oracle import oracle_masks


class Conv(nn.Module):
    def __init__(self, c_in, c_out, k, stride, pad, dil, groups):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, pad, dil, groups=groups, bias=False)

    def forward(self, x):
        return torch.relu(self.conv(x))


class Residual(nn.Module):
    def __init__(self, c, k):
        super().__init__()
        self.conv = nn.Conv2d(c, c, k, padding=k // 2, bias=False)

    def forward(self, x):
        return x + self.conv(x)


class Concat(nn.Module):
    def __init__(self, c_in, a, b):
        super().__init__()
        self.a, self.b = nn.Conv2d(c_in, a, 1, bias=False), nn.Conv2d(c_in, b, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], 1)


class Gate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.pool, self.s, self.act = nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1, bias=False), nn.Sigmoid()

    def forward(self, x):
        return x * self.act(self.s(self.pool(x)))


class Net(nn.Module):
    def __init__(self, blocks, c, h, classes):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(c * h * h, classes, bias=False)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(torch.flatten(x, 1))


@st.composite
def networks(draw):
    c = draw(st.integers(1, 3))
    h = draw(st.integers(1, 6))
    c0, h0 = c, h
    blocks = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "residual", "concat", "gate", "maxpool", "avgpool"]))
        if kind == "conv":
            k = draw(st.sampled_from([1, 2, 3]))
            stride = draw(st.sampled_from([1, 2]))
            dil = draw(st.sampled_from([1, 2]))
            pad = draw(st.integers(0, k))
            groups = draw(st.sampled_from([g for g in (1, 2, 3) if c % g == 0]))
            c_out = groups * draw(st.integers(1, 2))
            out = (h + 2 * pad - dil * (k - 1) - 1) // stride + 1
            if out < 1:
                continue
            blocks.append(Conv(c, c_out, k, stride, pad, dil, groups))
            c, h = c_out, out
        elif kind == "residual":
            blocks.append(Residual(c, draw(st.sampled_from([1, 3]))))
        elif kind == "concat":
            a, b = draw(st.integers(1, 2)), draw(st.integers(1, 2))
            blocks.append(Concat(c, a, b))
            c = a + b
        elif kind == "gate":
            blocks.append(Gate(c))
        elif h >= 2:
            blocks.append(nn.MaxPool2d(2, ceil_mode=draw(st.booleans())) if kind == "maxpool" else nn.AvgPool2d(2))
            h = (h + 1) // 2 if kind == "maxpool" and blocks[-1].ceil_mode else h // 2
    net = Net(blocks, c, h, draw(st.integers(1, 3)))
    seed = draw(st.integers(0, 2**31 - 1))
    density = draw(st.sampled_from([0.05, 0.2, 0.5, 0.8, 1.0]))
    g = torch.Generator().manual_seed(seed)
    masks = {name: torch.rand(p.shape, generator=g) < density
             for name, p in net.named_parameters() if name in connectome.prunable_weights(net)}
    return net, (1, c0, h0, h0), masks


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_random_networks_match_the_oracle(case):
    net, shape, masks = case
    res = connectome.analyze(net, input_shape=shape, masks=masks)
    ref = oracle_masks(net, [shape], masks)
    for name in ref:
        assert torch.equal(res.effective_masks[name], ref[name]), name
    if res.collapsed:  # no input reaches an output: the oracle finds no effective weight either
        assert not any(m.any() for m in ref.values())

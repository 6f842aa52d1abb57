"""EAST's pieces against their formulas: DyReLU-B computed by hand on random inputs and an exact ReLU at
beta = 0, and the phasing, cyclic-density and adjusted-density schedules at several points."""
import math

import pytest
import torch
from torch import nn

from connectome.train.east import (DyReLU, adjusted_density, cyclic_density, phase, phase_beta, phase_out,
                                   phasing_window)


def _by_hand(act: DyReLU, x: torch.Tensor) -> torch.Tensor:
    """y_c = max(a1 x_c + b1, a2 x_c + b2), the coefficients from pool -> fc -> relu -> fc -> 2 sigmoid - 1."""
    n, c = x.shape[:2]
    pooled = x.reshape(n, c, -1).mean(2)
    fc1, fc2 = act.hyper[0], act.hyper[2]
    theta = (2 * torch.sigmoid(fc2(torch.relu(fc1(pooled)))) - 1).detach()
    out = torch.empty_like(x)
    beta = float(act.beta)
    for i in range(n):
        for ch in range(c):
            t = theta[i].view(c, 4)[ch]
            coeff = [float(t[0]) * 1 + 1, float(t[1]) * 1, float(t[2]) * 0.5, float(t[3]) * 0.5]
            a1, a2, b1, b2 = (beta * v + (1 - beta) * init for v, init in zip(coeff, (1, 0, 0, 0)))
            out[i, ch] = torch.maximum(a1 * x[i, ch] + b1, a2 * x[i, ch] + b2)
    return out


@pytest.mark.parametrize("shape", [(3, 8, 5, 5), (4, 12), (2, 4, 7)])
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_dyrelu_is_the_formula(shape, beta):
    torch.manual_seed(sum(shape))
    act = DyReLU(shape[1])
    act.beta.fill_(beta)
    x = torch.randn(*shape) * 3
    assert torch.allclose(act(x), _by_hand(act, x), atol=1e-5)
    assert sum(p.numel() for p in act.parameters()) == (shape[1] * (shape[1] // 4) + shape[1] // 4) + (
        shape[1] // 4 * 4 * shape[1] + 4 * shape[1])


def test_dyrelu_at_beta_zero_is_exactly_relu_and_can_be_replaced():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), DyReLU(8), nn.Conv2d(8, 4, 1), DyReLU(4))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(5)  # coefficients far from their initial values
    x = torch.randn(6, 3, 9, 9)
    assert phase(net, 0.0) == 2
    before = net(x)
    hidden = net[0](x)
    assert torch.equal(net[1](hidden), torch.relu(hidden))
    assert phase_out(net) == 2 and not any(isinstance(m, DyReLU) for m in net.modules())
    assert torch.equal(net(x), before)


def test_the_schedules_match_their_formulas():
    assert phasing_window(60) == (30.0, 60.0)
    for epoch, want in [(0, 1.0), (30, 1.0), (37.5, 0.75), (45, 0.5), (59.4, 0.02), (60, 0.0), (200, 0.0)]:
        assert phase_beta(epoch, 30, 60) == pytest.approx(want)
    low, high, length = 0.001, 0.003, 50
    for t in (0, 5, 12.5, 25, 37.5, 49, 50, 75, 100):
        p = (t % length) / length
        want = low + (high - low) * (1 - math.cos(2 * math.pi * p)) / 2
        assert cyclic_density(t, low, high, length) == pytest.approx(want)
    assert cyclic_density(25, low, high, length) == pytest.approx(high)
    assert cyclic_density(50, low, high, length) == pytest.approx(low)
    # a budget of 0.1% of 1,500 weights is 1.5 weights; of the 1,000 the model owns, that is 0.15%
    assert adjusted_density(0.001, own=1000, shared=500) * 1000 == pytest.approx(0.001 * 1500)

"""CoreNet's compiled loops (numba, the `fast` extra) against their torch versions: the same numbers,
bit for bit, on awkward inputs (rows without weights of a sign, zero sensitivities, ties, one-weight
rows), and a whole run gives the same sparse network either way."""
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from connectome.prune.corenet import allocate, corenet, draw, sensitivities
from connectome.prune.corenet.kernel import compiled, draw_rows, max_product, sampled_rows, sensitivity_of

pytestmark = pytest.mark.skipif(compiled() is None, reason="numba is not installed (the fast extra)")


def _weights(g, out, width):
    w = torch.randn(out, width, generator=g) * (torch.rand(out, width, generator=g) > 0.3)
    w[0] = 0.0  # a neuron without weights
    w[1] = w[1].abs()  # one without negative weights
    return w


@pytest.mark.parametrize("width", [1, 2, 7, 300])
def test_the_max_product_is_the_same(width):
    g = torch.Generator().manual_seed(width)
    w = _weights(g, 9, width)
    a = torch.relu(torch.randn(50, width, generator=g))
    a[3] = 0.0
    both = torch.cat([w.clamp(min=0), (-w).clamp(min=0)])
    totals = a @ both.T
    totals[5, 3] = 1e-40  # below float32's smallest normal: floored before its inverse
    fast = torch.rand(9, width, generator=g)
    slow = fast.clone()
    max_product(fast, a, totals, w > 0)
    max_product(slow, a, totals, w > 0, fast=False)
    assert torch.equal(fast, slow)
    fast[0, 0] = float("inf")  # under a zero weight: no sensitivity, whatever top holds
    assert torch.equal(sensitivity_of(w, fast), sensitivity_of(w, fast, fast=False))


@pytest.mark.parametrize("width", [1, 2, 3, 7, 100])
def test_draws_and_reweighting_are_the_same(width):
    g = torch.Generator().manual_seed(width)
    w = _weights(g, 12, width)
    s = sensitivities(w, [torch.relu(torch.randn(30, width, generator=g))])
    s[2, ::2] = 0.0  # weights that can never be drawn
    u = torch.rand(24, 40, generator=g, dtype=torch.float64)
    u[:, 0] = 0.0  # the smallest and the largest points
    u[:, 1] = 1.0 - 2**-53
    fast, slow = draw_rows(w, s, u), draw_rows(w, s, u, fast=False)
    for f, sl in zip(fast, slow):
        assert torch.equal(f, sl)
    index, chance, _, mass, _ = fast
    m = torch.randint(0, 41, (24,), generator=g)
    assert torch.equal(sampled_rows(w, index, chance, m, mass), sampled_rows(w, index, chance, m, mass, fast=False))


def test_allocation_is_the_same_with_ties():
    g = torch.Generator().manual_seed(5)
    for trial in range(12):
        layers = []
        for shape in [(20, 30), (10, 20), (3, 5)]:
            w = _weights(g, *shape)
            s = sensitivities(w, [torch.relu(torch.randn(40, shape[1], generator=g))])
            if trial % 3 == 0:
                s = (w != 0).to(torch.float64)  # uniform: the same thresholds in many rows
            d = draw(w, s, int(torch.randint(1, 40, (1,), generator=g)), g)
            layers.append((d, d.mass * (trial % 2 + 1)))
        for budget in (0, 1, 17, 100, 2000):
            fast, slow = allocate(layers, budget), allocate(layers, budget, fast=False)
            assert fast[1] == slow[1] and all(torch.equal(a, b) for a, b in zip(fast[0], slow[0]))


def test_a_whole_run_is_the_same_without_numba(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10), nn.ReLU(),
                        nn.Linear(10, 3))
    x = torch.rand(40, 1, 8, 8)
    torch.save({"net": net, "x": x}, tmp_path / "case.pt")
    script = ("import sys, torch; from connectome.prune.corenet import corenet; c = torch.load(sys.argv[1], "
              "weights_only=False); torch.save(corenet(c['net'], c['x'], 0.3, variant='plusplus', seed=3).weights, "
              "sys.argv[2])")
    env = dict(os.environ, CONNECTOME_NO_NUMBA="1")
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "case.pt"), str(tmp_path / "slow.pt")], env=env,
                   check=True)
    slow = torch.load(tmp_path / "slow.pt")
    fast = corenet(net, x, 0.3, variant="plusplus", seed=3).weights
    assert fast.keys() == slow.keys() and all(torch.equal(fast[k], slow[k]) for k in fast)

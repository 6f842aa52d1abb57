"""CoreNet's sample sizes from the paper's bound: the formulas by hand, counts drawn at once from their
multinomial distribution (unbiased, whatever the sample size), and a run without a budget."""
import math

import torch
from torch import nn

from connectome.prune.corenet import corenet, sample_counts, sensitivities
from connectome.prune.corenet.bounds import depth_factors, draws_for, sample_size


def test_the_formulas_by_hand():
    # eta = 410 neurons, eta* = 300: log(8 * 123000 / 0.05) * log(123000) = 16.795 * 11.720 = 196.8
    assert sample_size([300, 100, 10], 0.05) == 197
    lam = math.log(35 * 30) / 2
    kappa = math.sqrt(2 * lam) * (1 + math.sqrt(2 * lam) * math.log(8 * 35 * 30 / 0.05))
    assert depth_factors([30, 5], [1.0, 2.0], 0.05) == [(1 + kappa) * (2 + kappa), 2 + kappa]
    # eps_l = 0.2 / (2 * 2 * 4) = 0.0125 for a layer of factor 4 in 3 layers of 50 neurons
    m = draws_for(torch.tensor([1.5]), 4.0, 3, 50, 0.2, 0.1)
    assert float(m) == math.ceil(8 * 1.5 * math.log(8 * 50 / 0.1) / 0.0125**2)


def test_counts_drawn_at_once_keep_what_was_drawn():
    # unbiasedness and the distribution of the counts: tests/prune/test_corenet.py, beside the draws one by one
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 30, generator=g)
    s = sensitivities(w, [torch.relu(torch.randn(64, 30, generator=g))])
    kept = sample_counts(w, s, torch.tensor([6.0, 6.0]), g) != 0
    assert 2 <= int(kept.sum()) <= 12
    # astronomically many draws: every weight that can be drawn is kept, at its own value
    huge = sample_counts(w, s, torch.tensor([1e18, 1e18]), g)
    assert torch.allclose(huge, w * (s > 0), rtol=1e-6)


def test_without_a_budget_the_bound_sets_the_draws():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    x = torch.relu(torch.randn(32, 6))
    tight = corenet(net, x, None, epsilon=0.1)
    # the bound is loose: at epsilon 0.1 it keeps every weight, reweighted to within a hair of itself
    assert tight.kept == tight.budget == 36
    for name, w in tight.weights.items():
        assert torch.allclose(w, dict(net.named_parameters())[name], rtol=1e-3)
    # an enormous epsilon asks for one draw per (neuron, sign) row: one weight kept in each
    loose = corenet(net, x, None, epsilon=1e12)
    for name, mask in loose.masks.items():
        w = dict(net.named_parameters())[name]
        rows = int((w > 0).any(1).sum() + (w < 0).any(1).sum())
        assert int(mask.sum()) == rows

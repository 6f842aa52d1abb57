"""CoreNet's pieces against hand computations and brute force: sensitivities, the sampling
distribution, the unbiased estimator, exact budgets, convolutions as patches, seeds."""
import itertools

import pytest
import torch
from torch import nn

from connectome.prune.corenet import (Accumulator, allocate, conv_patches, distribution, draw, reweight, sample,
                                      sample_counts, sensitivities)


def _net():
    net = nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 2, 0], [-1, 1, 1], [0, 0, 3], [2, -2, 1]]))
        net[2].weight.copy_(torch.tensor([[1.0, -1, 2, 1], [0.5, 0.5, -1, 0]]))
    return net


S = torch.tensor([[1.0, 0, 1], [0, 1, 1]])


def test_sensitivities_of_a_3_4_2_net_equal_the_hand_computation():
    net = _net()
    # layer 1, neuron 1 (weights -1, 1, 1): positive set {1, 2} has shares (0, 1) on x1 and (1/2, 1/2)
    # on x2, so s = 1/2 and 1; the negative set {0} has share 1 on x1 and 0/0 (counted 0) on x2
    assert torch.allclose(sensitivities(net[0].weight, [S]), torch.tensor(
        [[1, 1, 0], [1, 0.5, 1], [0, 0, 1], [2 / 3, 1, 1]], dtype=torch.float64))
    hidden = torch.relu(net[0](S))
    assert hidden.tolist() == [[1, 0, 3, 3], [2, 2, 3, 0]]
    # layer 2, neuron 0 (1, -1, 2, 1): positive contributions (1, 6, 3) on x1 and (2, 6, 0) on x2
    s2 = sensitivities(net[2].weight, [hidden])
    assert torch.allclose(s2, torch.tensor([[0.25, 1, 0.75, 0.3], [1, 0.5, 1, 0]], dtype=torch.float64))
    d = draw(net[2].weight, s2, 1, torch.Generator().manual_seed(0))
    # rows: (neuron 0, +), (neuron 1, +), (neuron 0, -), (neuron 1, -)
    assert torch.allclose(distribution(net[2].weight, s2), torch.tensor([[0.25 / 1.3, 0, 0.75 / 1.3, 0.3 / 1.3], [1 / 1.5, 0.5 / 1.5, 0, 0],
                                             [0, 1, 0, 0], [0, 0, 1, 0]], dtype=torch.float64))
    assert d.mass.tolist() == pytest.approx([1.3, 1.5, 1.0, 1.0])


def _brute(weight, inputs):
    """s_j = max over x of |w_j a_j(x)| / (sum over the sign set), by loops."""
    out = torch.zeros(weight.shape, dtype=torch.float64)
    for i, j in itertools.product(range(weight.shape[0]), range(weight.shape[1])):
        w = float(weight[i, j])
        if w == 0:
            continue
        same = [k for k in range(weight.shape[1]) if float(weight[i, k]) * w > 0]
        for a in inputs.abs().double():
            total = sum(abs(float(weight[i, k])) * float(a[k]) for k in same)
            if total > 0:
                out[i, j] = max(out[i, j], abs(w) * float(a[j]) / total)
    return out


def test_sensitivities_match_brute_force_in_any_chunking():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(5, 7, generator=g) * (torch.rand(5, 7, generator=g) > 0.3)
    x = torch.relu(torch.randn(40, 7, generator=g))
    whole = sensitivities(w, [x])
    assert torch.allclose(whole, _brute(w, x))
    assert torch.equal(sensitivities(w, list(x.split(3))), whole)
    acc = Accumulator(w)
    for part in x.split(11):
        acc.add(part)
    assert torch.equal(acc.result(), whole) and acc.seen == 40


def test_a_1x1_convolution_is_the_linear_layer_over_pixels():
    g = torch.Generator().manual_seed(1)
    conv = nn.Conv2d(3, 4, 1, bias=False)
    x = torch.relu(torch.randn(6, 3, 5, 5, generator=g))
    pixels = x.permute(0, 2, 3, 1).reshape(-1, 3)
    assert torch.equal(conv_patches(conv, x, 0), pixels)
    assert torch.allclose(sensitivities(conv.weight.reshape(4, 3), [conv_patches(conv, x, 0)]),
                          sensitivities(conv.weight.reshape(4, 3), [pixels]))


def test_the_estimator_is_unbiased():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 30, generator=g)
    x = torch.relu(torch.randn(64, 30, generator=g))
    s = sensitivities(w, [x])
    probe = x[0].double()
    exact = float(w.double() @ probe)
    trials = torch.stack([sample(w, s, torch.tensor([6, 6]), g).double() @ probe for _ in range(4000)]).flatten()
    err = float(trials.std()) / len(trials) ** 0.5
    assert abs(float(trials.mean()) - exact) < 4 * err, (float(trials.mean()), exact, err)
    assert float(trials.std()) > 0   # it is a random estimate, not the weight itself
    # the counts drawn at once from their multinomial (the bound's sizes): unbiased too, and distributed as
    # the draws one by one (the spreads agree within a few percent)
    at_once = torch.stack([sample_counts(w, s, torch.tensor([6.0, 6.0]), g).double() @ probe for _ in range(4000)])
    assert abs(float(at_once.mean()) - exact) < 4 * float(at_once.std()) / 4000**0.5
    assert abs(float(at_once.std()) / float(trials.std()) - 1) < 0.1


def test_budgets_are_met_exactly_and_nest():
    g = torch.Generator().manual_seed(2)
    layers = []
    for shape in [(20, 30), (10, 20)]:
        w = torch.randn(*shape, generator=g)
        s = sensitivities(w, [torch.relu(torch.randn(50, shape[1], generator=g))])
        d = draw(w, s, 400, torch.Generator().manual_seed(7))
        layers.append((w, d, d.mass))
    previous = None
    for budget in (25, 60, 61, 200, 500):
        sizes, short = allocate([(d, b) for _, d, b in layers], budget)
        kept = [reweight(w, d, m) != 0 for (w, d, _), m in zip(layers, sizes)]
        assert sum(int(k.sum()) for k in kept) == budget and not any(short)
        if previous is not None:
            assert all(bool((p <= k).all()) for p, k in zip(previous, kept))
        previous = kept
    everything = sum(int((w != 0).sum()) for w, _, _ in layers)
    sizes, short = allocate([(d, b) for _, d, b in layers], everything + 10)
    assert any(short) or sum(int((reweight(w, d, m) != 0).sum()) for (w, d, _), m in zip(layers, sizes)) == everything


def test_the_same_seed_draws_the_same_weights():
    w = torch.randn(6, 9, generator=torch.Generator().manual_seed(4))
    s = sensitivities(w, [torch.rand(10, 9)])
    m = torch.full((12,), 5)
    a = sample(w, s, m, torch.Generator().manual_seed(9))
    assert torch.equal(a, sample(w, s, m, torch.Generator().manual_seed(9)))
    assert not torch.equal(a, sample(w, s, m, torch.Generator().manual_seed(10)))


@pytest.mark.parametrize("kw", [dict(kernel_size=3, padding=1), dict(kernel_size=3, stride=2, padding=1, dilation=2),
                                dict(kernel_size=(1, 3), padding="same"), dict(kernel_size=3, padding=1, groups=2),
                                dict(kernel_size=3, padding=1, padding_mode="reflect")],
                         ids=["pad", "stride-dilation", "same", "groups", "reflect"])
def test_patches_are_what_the_kernels_read(kw):
    # each group's patches times its kernels (as rows) give the convolution's output, position by position
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, bias=False, **kw)
    x = torch.randn(2, 4, 7, 7)
    out = conv(x)
    per_out = 6 // conv.groups
    for g in range(conv.groups):
        rows = conv.weight[g * per_out:(g + 1) * per_out].reshape(per_out, -1)
        got = (conv_patches(conv, x, g) @ rows.T).reshape(2, out.shape[2], out.shape[3], per_out).permute(0, 3, 1, 2)
        assert torch.allclose(got, out[:, g * per_out:(g + 1) * per_out], atol=1e-5)


def _dead_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        net[0].bias[[1, 4]] = -100.0   # these two never fire on any reasonable input
    return net


def test_corenet_plus_removes_exactly_the_neurons_that_never_fire_on_the_sample():
    from connectome.prune.corenet.layers import gather
    from connectome.prune.corenet.run import corenet
    net, x = _dead_net(), torch.randn(50, 5)
    layers = gather(net, x)
    assert [lay.name for lay in layers] == ["0.weight", "2.weight"]
    assert layers[0].reads_data and not layers[0].nonnegative and layers[1].nonnegative and not layers[1].reads_data
    assert (~layers[1].fired).nonzero().flatten().tolist() == [1, 4]
    plain = corenet(net, x, keep=0.6, seed=1)
    plus = corenet(net, x, keep=0.6, variant="plus", seed=1)
    assert plus.removed_neurons == {"0.weight": 2} and not plain.removed_neurons
    assert not bool(plus.masks["0.weight"][[1, 4]].any()) and bool(plain.masks["0.weight"][[1, 4]].any())
    for r in (plain, plus):   # their outgoing weights carry nothing on S: never sampled
        assert not bool(r.masks["2.weight"][:, [1, 4]].any()) and r.kept == r.budget == int(0.6 * 48)
    assert not plus.notes   # the first layer reads the data; the second sits behind a ReLU


def test_a_layer_behind_a_signed_activation_is_named():
    from connectome.prune.corenet.run import corenet
    net = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    r = corenet(net, torch.randn(40, 5), keep=0.5)
    assert len(r.notes) == 1 and r.notes[0].startswith("2.weight: inputs are signed")


def test_baselines_meet_the_same_budget():
    from connectome.prune.corenet import baseline
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10))
    x = torch.randn(64, 20)
    uni = baseline("uniform", net, x, 0.25)
    assert uni.kept == uni.budget == int(0.25 * 900)
    mag = baseline("magnitude", net, x, 0.25)
    assert mag.kept == int(0.25 * 900)
    for name, mask in mag.masks.items():   # the largest |w| of each layer, at the same density
        w = dict(net.named_parameters())[name].detach().abs()
        assert float(w[mask].min()) >= float(w[~mask].max())
        assert torch.equal(mag.weights[name], dict(net.named_parameters())[name].detach() * mask)
    svd = baseline("svd", net, x, 0.25)
    ranks = [int(0.25 * 600 // 50), int(0.25 * 300 // 40)]
    assert svd.kept == ranks[0] * 50 + ranks[1] * 40
    assert [int(torch.linalg.matrix_rank(w.double(), rtol=1e-5)) for w in svd.weights.values()] == ranks


def test_the_measured_guarantee_counts_inputs_with_every_output_within_epsilon():
    from connectome.prune.corenet.guarantee import measure
    net = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 1.0]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    g = measure(net, {"weight": torch.tensor([[1.5, 1.0]])}, x, epsilon=0.3, delta=0.4)
    assert g.errors.flatten().tolist() == pytest.approx([0.5, 0.0, 0.25])
    assert g.within == pytest.approx(2 / 3) and g.holds   # 2/3 >= 1 - 0.4
    assert not measure(net, {"weight": torch.tensor([[1.5, 1.0]])}, x, epsilon=0.3, delta=0.3).holds


class _Skip(nn.Module):
    """A residual block whose first layer's neurons are read by the second layer *and* by the skip."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.head(torch.relu(self.b(h) + h))


def test_neurons_are_removed_only_where_one_layer_alone_reads_them():
    from connectome.prune.corenet.chain import sole_readers
    from connectome.prune.corenet.run import corenet
    assert sole_readers(_dead_net()) == {"0.weight": "2.weight"}
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 2, 1),
                         nn.Flatten(), nn.Linear(8, 2))
    assert sole_readers(conv) == {"0.weight": "4.weight"}   # a flatten mixes positions into columns
    net = _Skip()
    assert sole_readers(net) == {}   # a feeds b and the skip; b feeds an add, not head alone
    with torch.no_grad():
        net.a.bias[[0, 3]] = -100.0
    r = corenet(net, torch.randn(40, 6), keep=0.9, variant="plus")
    assert "a.weight" not in r.removed_neurons and bool(r.masks["a.weight"][[0, 3]].any())

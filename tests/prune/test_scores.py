"""Each score on a tiny network against a hand computation (or an independent autograd one)."""
import math

import pytest
import torch
from torch import nn

from connectome.prune import SCORES, select
from connectome.prune.scores import Context


def _ctx(model, batch=None, sparsity=0.5, rounds=100, input_shape=(1, 3), quota=None):
    weights = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
    ctx = Context(model, weights, {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}, sparsity,
                  select=lambda s, sp: select(s, sp, quota, within=ctx.masks),
                  generator=torch.Generator().manual_seed(0), input_shape=input_shape, batch=batch, rounds=rounds)
    return ctx


def _linear(w):
    m = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        m.weight.copy_(w)
    return m


def test_registry_lists_the_methods():
    assert {"magnitude", "random", "snip", "grasp", "synflow", "lamp"} <= set(SCORES)
    assert SCORES["snip"].needs_data and SCORES["grasp"].needs_data and not SCORES["synflow"].needs_data
    assert SCORES["synflow"].iterative


def test_magnitude_and_random():
    m = _linear(torch.tensor([[1.0, -3.0], [0.5, 2.0]]))
    assert SCORES["magnitude"].fn(_ctx(m))["weight"].tolist() == [[1.0, 3.0], [0.5, 2.0]]
    r = SCORES["random"].fn(_ctx(m))["weight"]
    assert torch.equal(r, torch.rand((2, 2), generator=torch.Generator().manual_seed(0)))


def test_lamp_by_hand():
    m = _linear(torch.tensor([[1.0, 2.0, 3.0]]))
    s = SCORES["lamp"].fn(_ctx(m))["weight"][0].tolist()
    assert s == pytest.approx([1 / 14, 4 / 13, 9 / 9])


def test_snip_by_hand():
    w = torch.tensor([[1.0, -2.0], [0.5, 1.0]])
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
    y = torch.tensor([0, 1])
    s = SCORES["snip"].fn(_ctx(_linear(w), batch=(x, y)))["weight"]
    z = x @ w.t()                                  # logits
    p = torch.exp(z) / torch.exp(z).sum(1, keepdim=True)
    grad = (p - torch.eye(2)[y]).t() @ x / 2       # d mean CE / dW
    assert torch.allclose(s, (grad * w).abs(), atol=1e-6)


def test_grasp_against_an_explicit_hessian():
    torch.manual_seed(0)
    w = torch.randn(3, 4)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    s = SCORES["grasp"].fn(_ctx(_linear(w), batch=(x, y)))["weight"]

    def loss(flat):
        return nn.functional.cross_entropy(x @ flat.view(3, 4).t() / 200.0, y)
    flat = w.flatten().double()
    x, y = x.double(), y
    g = torch.autograd.functional.jacobian(loss, flat)
    h = torch.autograd.functional.hessian(loss, flat)
    assert torch.allclose(s.double().flatten(), flat * (h @ g), rtol=1e-4, atol=1e-12)


def test_synflow_matches_the_flow_formula():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 2, bias=False))
    w1, w2 = m[0].weight.detach().abs().double(), m[2].weight.detach().abs().double()
    ctx = _ctx(m, input_shape=(1, 3))
    from connectome.prune.scores.synflow import synflow_scores
    s = synflow_scores(ctx)
    # R = 1^T |W2| |W1| 1: dR/dW1[i, j] = (1^T |W2|)_i, dR/dW2[k, i] = (|W1| 1)_i
    assert torch.allclose(s["0.weight"], w1 * w2.sum(0)[:, None])
    assert torch.allclose(s["2.weight"], w2 * w1.sum(1)[None, :])


def test_synflow_prunes_iteratively_to_the_budget_and_keeps_the_network_connected():
    torch.manual_seed(0)
    # without biases: with them, SynFlow's flow also runs from bias-only units, which carry no input signal
    m = nn.Sequential(nn.Linear(20, 30, bias=False), nn.ReLU(), nn.Linear(30, 30, bias=False), nn.ReLU(),
                      nn.Linear(30, 5, bias=False))
    ctx = _ctx(m, sparsity=0.98, rounds=20, input_shape=(1, 20))
    scores = SCORES["synflow"].fn(ctx)
    masks = select(scores, 0.98, within=ctx.masks)
    total = sum(v.numel() for v in masks.values())
    assert sum(int(v.sum()) for v in masks.values()) == round(0.02 * total)
    import connectome
    res = connectome.analyze(m, input_shape=(1, 20), masks=masks)
    assert not res.collapsed and res.params_effective == res.params_nonzero   # SynFlow keeps only flow


def _synflow_pair(model, reference, input_shape, seed):
    """connectome's SynFlow scores of ``model`` under random masks, and SynFlow as its authors state it,
    by plain autograd on ``reference`` (the same weights): a float64 copy with every parameter and buffer
    made absolute and the masks applied, in eval mode, fed ones; R = sum of the output; |w * dR/dw|."""
    import copy

    from connectome.io.masks import prunable_weights
    from connectome.prune.scores.synflow import synflow_scores
    names = list(prunable_weights(model))
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(seed)
    masks = {n: torch.rand(params[n].shape, generator=g) > 0.7 for n in names}
    ctx = Context(model, {n: params[n] for n in names}, masks, 0.9, select=None,
                  generator=torch.Generator().manual_seed(0), input_shape=input_shape)
    got = synflow_scores(ctx)
    ref = copy.deepcopy(reference).double().eval()
    with torch.no_grad():
        for v in ref.state_dict().values():
            if v.is_floating_point():
                v.abs_()
        ref_params = dict(ref.named_parameters())
        for n in names:
            ref_params[n].mul_(masks[n])
    ref(torch.ones(input_shape, dtype=torch.float64)).sum().backward()
    return got, {n: (ref_params[n] * ref_params[n].grad).abs() for n in names}, masks


def test_synflow_matches_plain_autograd_on_a_masked_resnet():
    """Batch norm, residual adds and pooling are all on the path."""
    from connectome.models import resnet18_cifar
    torch.manual_seed(0)
    model = resnet18_cifar().eval()
    with torch.no_grad():   # as after training: signed norm parameters and statistics, so that abs() matters
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.normal_(), mod.bias.normal_(), mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 2.0)
    got, want, masks = _synflow_pair(model, model, (1, 3, 32, 32), seed=1)
    for n in want:
        assert torch.allclose(got[n], want[n], rtol=1e-9, atol=0), n
        assert int((got[n] > 0).sum()) <= int(masks[n].sum())


class _Gated(nn.Module):
    """Clipping and bending activations and a squeeze-excite gate, as in MobileNets and EfficientNets."""

    def __init__(self, act=nn.ReLU6, act2=nn.Hardswish, gate=nn.Sigmoid, act3=nn.GELU):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), act(),
                                  nn.Conv2d(8, 8, 3, padding=1, groups=8), act2())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 8, 1), gate())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 6 * 6, 4), act3(), nn.Linear(4, 2))

    def forward(self, x):
        x = self.conv(x)
        return self.head(x * self.se(x))


def test_synflow_linearises_activations():
    torch.manual_seed(0)
    model = _Gated().eval()
    linear = _Gated(nn.Identity, nn.Identity, nn.Identity, nn.Identity)
    linear.load_state_dict(model.state_dict())
    got, want, _ = _synflow_pair(model, linear, (1, 3, 6, 6), seed=2)
    for n in want:
        assert torch.allclose(got[n], want[n], rtol=1e-9, atol=0), n


def test_synflow_keeps_mobilenet_v2_connected():
    # ReLU6 clips the flow of ones: left in, it stops every gradient behind it and the network collapses
    torchvision = pytest.importorskip("torchvision")
    import connectome
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2().eval()
    p = connectome.prune.prune(model, "synflow", 0.99, input_shape=(1, 3, 32, 32), rounds=10)
    assert not p.analysis.collapsed
    assert p.analysis.effective_compression / p.analysis.direct_compression < 1.05


def test_random_scores_are_not_the_stream_that_initialised_the_weights():
    # torch.manual_seed(0) and then a model's initialisation draw the uniforms that a generator seeded 0
    # draws: scores from it kept each layer's largest starting weights (1.8x the mean |w| on the first layer)
    from connectome.models import lenet_300_100
    from connectome.prune import prune
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = lenet_300_100()
        p = prune(model, "random", 0.9, quota="uniform", seed=seed, input_shape=(1, 1, 28, 28))
        params = dict(model.named_parameters())
        for name, mask in p.masks.items():
            w = params[name].detach().abs()
            assert abs(float(w[mask].mean()) / float(w.mean()) - 1) < 0.1, (seed, name)

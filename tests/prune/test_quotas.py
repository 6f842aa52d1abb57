"""Layer quotas: budgets met to one weight, IGQ against a hand-solved case, ERK never above density 1."""
import math

import pytest

from connectome.io.masks import prunable_weights
from connectome.models import MODELS
from connectome.prune.quotas import QUOTAS, budget, erk, igq, kept_counts, uniform_plus

ARCHS = ["lenet_300_100", "vgg19", "resnet18"]


def _shapes(arch):
    m = MODELS[arch]()
    params = dict(m.named_parameters())
    return [tuple(params[n].shape) for n in prunable_weights(m)]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", sorted(QUOTAS))
def test_kept_count_equals_budget(arch, name):
    shapes = _shapes(arch)
    for sparsity in (0.05, 0.5, 0.9, 0.99, 0.999):
        if name == "uniform_plus" and _uniform_plus_infeasible(shapes, sparsity):
            with pytest.raises(ValueError, match="uniform_plus"):
                QUOTAS[name](shapes, sparsity)
            continue
        d = QUOTAS[name](shapes, sparsity)
        assert len(d) == len(shapes) and all(0.0 <= x <= 1.0 for x in d)
        want = budget(shapes, sparsity)
        assert abs(sum(x * math.prod(s) for x, s in zip(d, shapes)) - want) <= 1.0
        counts = kept_counts(shapes, d)
        assert sum(counts) == want and all(0 <= k <= math.prod(s) for k, s in zip(counts, shapes))


def _uniform_plus_infeasible(shapes, sparsity):
    """The dense first layer plus the last layer at density 0.2 (if it would go lower) exceed the budget."""
    n = [math.prod(s) for s in shapes]
    k = budget(shapes, sparsity)
    shared = (k - n[0]) / sum(n[1:])
    return k < n[0] or (shared < 0.2 and k - n[0] - 0.2 * n[-1] < 0)


def test_igq_two_layers_by_hand():
    # 10/(1+10F) + 30/(1+30F) = 20 with a = 10F: 3a^2 + a - 1 = 0, a = (sqrt(13) - 1) / 6
    a = (math.sqrt(13) - 1) / 6
    d = igq([(10,), (30,)], 0.5)
    assert d == pytest.approx([1 / (1 + a), 1 / (1 + 3 * a)], abs=1e-9)


def test_erk_saturates_at_one_and_rescales():
    shapes = [(3, 2), (1000, 1000), (2, 1000)]
    d = erk(shapes, 0.5)
    assert max(d) <= 1.0 and d[0] == 1.0
    assert sum(x * math.prod(s) for x, s in zip(d, shapes)) == pytest.approx(budget(shapes, 0.5), abs=1)
    for arch in ARCHS:
        shapes = _shapes(arch)
        for sparsity in (0.01, 0.1, 0.5, 0.9):
            assert max(erk(shapes, sparsity)) <= 1.0
    # RigL's rule: density proportional to (sum of dims) / (product of dims) among the layers not saturated
    d = erk([(100, 100), (50, 400)], 0.9)
    assert d[0] / d[1] == pytest.approx((200 / 10000) / (450 / 20000))


def test_uniform_plus_first_dense_last_at_most_80_percent_sparse():
    shapes = _shapes("vgg19")
    for sparsity in (0.5, 0.9, 0.99):
        d = uniform_plus(shapes, sparsity)
        assert d[0] == 1.0 and d[-1] >= 0.2 and len(set(d[1:-1])) == 1
    with pytest.raises(ValueError, match="fewer than the dense first layer"):
        uniform_plus(_shapes("lenet_300_100"), 0.5)     # its first layer holds 88% of the weights

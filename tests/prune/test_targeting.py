"""Effective targeting: the effective sparsity meets the target within 0.1%, in few analyses."""
import math

import pytest
import torch

from connectome.models import INPUT_SHAPES, MODELS
from connectome.prune import PruneError, prune


@pytest.mark.parametrize("arch", ["lenet_300_100", "vgg19", "resnet18"])
@pytest.mark.parametrize("method,quota", [("random", "uniform"), ("random", "igq")])
def test_effective_target_within_a_tenth_of_a_percent(arch, method, quota):
    torch.manual_seed(0)
    model = MODELS[arch]().eval()
    total = sum(p.numel() for n, p in model.named_parameters() if p.dim() > 1)
    bound = math.ceil(math.log2(total)) + 2
    for compression in (10, 100, 1000):
        sparsity = 1 - 1 / compression
        log = []
        p = prune(model, method, sparsity, quota=quota, target="effective", input_shape=INPUT_SHAPES[arch],
                  log=log.append)
        assert abs(p.analysis.effective_sparsity - sparsity) <= 0.001, (compression, p.analysis.effective_sparsity)
        assert p.analysis.effective_sparsity >= sparsity        # the target can be claimed as asked
        assert p.analyses <= bound and p.analyses == sum("analysis" in line for line in log)
        assert p.analysis.direct_sparsity <= p.analysis.effective_sparsity
        assert not p.analysis.collapsed and p.note is None


def test_a_target_the_scores_jump_over_is_reported():
    # global magnitude at initialisation starves the last layers of VGG-19: nothing is effective until the
    # classifier gets a weight, and then most kept weights become effective at once
    model = MODELS["vgg19"]().eval()
    torch.manual_seed(0)
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    log = []
    p = prune(model, "magnitude", 0.99, target="effective", input_shape=(1, 3, 32, 32), log=log.append)
    assert p.analysis.effective_sparsity < 0.99 - 0.001
    assert p.note is not None and "within 0.1%" in p.note and any(p.note in line for line in log)


def test_direct_target_keeps_exactly_the_budget():
    model = MODELS["lenet_300_100"]()
    p = prune(model, "random", 0.99, quota="igq", input_shape=(1, 1, 28, 28))
    assert p.kept == round(0.01 * 266200) and p.analyses == 1
    assert abs(p.analysis.direct_sparsity - 0.99) < 1e-6


def test_prune_is_deterministic_under_a_seed_and_leaves_the_model_alone():
    model = MODELS["lenet_300_100"]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = prune(model, "random", 0.9, seed=3, input_shape=(1, 1, 28, 28))
    b = prune(model, "random", 0.9, seed=3, input_shape=(1, 1, 28, 28))
    c = prune(model, "random", 0.9, seed=4, input_shape=(1, 1, 28, 28))
    assert all(torch.equal(a.masks[k], b.masks[k]) for k in a.masks)
    assert any(not torch.equal(a.masks[k], c.masks[k]) for k in a.masks)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_requests():
    model = MODELS["lenet_300_100"]()
    with pytest.raises(ValueError, match="unknown pruning method 'snap'"):
        prune(model, "snap", 0.9, input_shape=(1, 1, 28, 28))
    with pytest.raises(ValueError, match="unknown quota"):
        prune(model, "random", 0.9, quota="gas", input_shape=(1, 1, 28, 28))
    with pytest.raises(ValueError, match="snip scores weights on data"):
        prune(model, "snip", 0.9, input_shape=(1, 1, 28, 28))
    with pytest.raises(ValueError, match=r"sparsity must lie in \[0, 1\]"):
        prune(model, "random", 1.5, input_shape=(1, 1, 28, 28))


def test_scores_that_are_all_zero_are_refused():
    # torchvision's ViT starts with a zero classifier head: no flow, no gradient reaches any weight
    m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    torch.nn.init.zeros_(m[2].weight)
    with pytest.raises(PruneError, match="synflow scores every weight 0, so it cannot rank them: 2.weight is all "
                                         "zero and cut every path"):
        prune(m, "synflow", 0.5, input_shape=(1, 4), rounds=3)
    for p in m.parameters():
        torch.nn.init.zeros_(p)
    with pytest.raises(PruneError, match="magnitude scores every weight 0.*: 0.weight, 2.weight are all zero"):
        prune(m, "magnitude", 0.5, input_shape=(1, 4))


def test_synflow_aimed_at_effective_sparsity_restores_weights_that_carry_flow():
    # the rounds leave every pruned weight at flow 0; ranked by the flow each would carry if restored, the
    # weights that effective targeting adds join live units instead of landing where they connect nothing
    for compression in (100, 1000):
        torch.manual_seed(0)
        model = MODELS["lenet_300_100"]()
        direct = prune(model, "synflow", 1 - 1 / compression, rounds=20, input_shape=(1, 1, 28, 28))
        eff = prune(model, "synflow", 1 - 1 / compression, rounds=20, target="effective", input_shape=(1, 1, 28, 28))
        assert abs(eff.analysis.effective_sparsity - (1 - 1 / compression)) <= 0.001
        wasted = eff.analysis.params_nonzero - eff.analysis.params_effective
        assert wasted <= 0.05 * eff.analysis.params_nonzero, (compression, wasted)   # 78% at 100x before
        # more kept weights contain the fewer: the direct masks are inside the effective-targeted ones
        assert all(bool((direct.masks[n] <= eff.masks[n]).all()) for n in direct.masks)


def test_synflow_final_scores_give_back_the_last_round_s_masks():
    from connectome.prune import select
    from connectome.prune.scores import SCORES, Context
    torch.manual_seed(0)
    model = MODELS["lenet_300_100"]()
    weights = {n: p for n, p in model.named_parameters() if p.dim() > 1}
    for quota in (None, "erk"):
        ctx = Context(model, weights, {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}, 0.99,
                      select=lambda s, sp: select(s, sp, quota, within=ctx.masks), generator=torch.Generator(),
                      input_shape=(1, 1, 28, 28), rounds=10)
        scores = SCORES["synflow"].fn(ctx)
        again = select(scores, 0.99, quota)
        assert all(torch.equal(again[n], ctx.masks[n]) for n in weights)
        # the pruned weights that could carry flow rank above those that could not, and below every kept one
        for n in weights:
            assert bool((scores[n][ctx.masks[n]] > 0).all())

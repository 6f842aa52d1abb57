"""Mask-update policies on hand-made nets, the schedules against their formulas, exact kept counts, and
the two options built on effective sparsity: --guard and --reclaim."""
import math

import pytest
import torch

from connectome.analysis import Analyzer
from connectome.models import lenet_300_100
from connectome.prune import select
from connectome.train import POLICIES, Config, Update, Watch, drop_fraction, gmp_sparsity, train
from connectome.train.policies.gmp import GMP
from connectome.train.policies.rigl import RigL
from connectome.train.policies.set_ import SET

W = torch.tensor([[0.9, -0.1, 0.0, 0.5],
                  [0.0, 0.3, -0.7, 0.0]])
MASK = torch.tensor([[True, True, False, True],
                     [False, True, True, False]])          # 5 kept: |w| 0.9 0.1 0.5 0.3 0.7


def _update(step=0, grads=None, total=100, seed=0):
    return Update(step, total, {"w": W}, {"w": MASK}, torch.Generator().manual_seed(seed),
                  None if grads is None else {"w": grads})


def test_rigl_drops_the_smallest_and_grows_the_largest_dense_gradients():
    grads = torch.tensor([[5.0, 9.0, 0.2, 1.0],
                          [4.0, 0.0, 3.0, 0.1]])
    rigl = RigL(total=100, update_every=10, drop_fraction=0.4, end=1.0)
    # at step 0 the fraction is 0.4: floor(0.4 * 5) = 2 dropped, the two smallest |w|: -0.1 and 0.3;
    # grown: the two inactive (after the drop) entries of largest |g|: 9.0 (re-grown at once) and 4.0
    new = rigl.update(_update(0, grads))["w"]
    assert new.tolist() == [[True, True, False, True],
                            [True, False, True, False]]
    assert int(new.sum()) == int(MASK.sum())
    half = rigl.update(_update(50, grads))["w"]       # fraction 0.4/2 * (1 + cos(pi/2)) = 0.2: one swap
    assert half.tolist() == [[True, True, False, True], [False, True, True, False]]  # drops -0.1, regrows it


def test_set_drops_the_smallest_and_grows_where_its_seeded_noise_is_largest():
    pol = SET(total=100, update_every=10, drop_fraction=0.4)
    u = _update(seed=7)
    noise = torch.rand((2, 4), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    after_drop = MASK & ~torch.tensor([[False, True, False, False], [False, True, False, False]])
    cand = torch.where(~after_drop, noise, torch.tensor(float("-inf"), dtype=torch.float64)).flatten()
    expected = after_drop.flatten().clone()
    expected[torch.topk(cand, 2).indices] = True
    assert pol.update(u)["w"].flatten().tolist() == expected.tolist()


def test_the_drop_fraction_and_gmp_schedules_match_their_formulas():
    for step in (0, 1, 25, 50, 74, 75, 100):
        want = 0.3 / 2 * (1 + math.cos(math.pi * step / 75)) if step < 75 else 0.0
        assert drop_fraction(0.3, step, 75) == pytest.approx(want)
        t = min(max((step - 10) / 60, 0.0), 1.0)
        assert gmp_sparsity(0.95, step, 10, 70) == pytest.approx(0.95 * (1 - (1 - t) ** 3))


def test_gmp_prunes_from_dense_on_its_schedule_and_never_regrows():
    w = {"w": torch.arange(1.0, 101.0).view(10, 10)}
    masks = {"w": torch.ones(10, 10, dtype=torch.bool)}
    pol = GMP(total=100, sparsity=0.9, quota="uniform", update_every=10, end=0.5)
    kept = []
    for step in range(1, 101):
        if pol.due(step):
            masks = pol.update(Update(step, 100, w, masks, torch.Generator()))
            kept.append((step, int(masks["w"].sum())))
    assert kept[-1] == (50, 10)                                   # the final sparsity at the end
    assert [k for _, k in kept] == sorted((k for _, k in kept), reverse=True)
    assert all(k == math.floor(100 * (1 - gmp_sparsity(0.9, s, 0, 50)) + 1e-9) for s, k in kept)
    assert masks["w"].flatten()[-10:].all()                       # the largest magnitudes stay


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_kept_counts_never_change(method):
    torch.manual_seed(0)
    model = lenet_300_100()
    names = ["1.weight", "3.weight", "5.weight"]
    params = dict(model.named_parameters())
    masks = select({n: torch.rand(params[n].shape) for n in names}, 0.95, quota="erk")
    start = {n: int(m.sum()) for n, m in masks.items()}
    pol = POLICIES[method](total=1000, update_every=1, drop_fraction=0.5, end=1.0)
    g = torch.Generator().manual_seed(1)
    for step in range(1, 30):
        weights = {n: torch.randn(params[n].shape, generator=g) * masks[n] for n in names}
        grads = {n: torch.randn(params[n].shape, generator=g) for n in names}
        masks = pol.update(Update(step, 1000, weights, masks, g, grads))
        assert {n: int(m.sum()) for n, m in masks.items()} == start


def _records(run):
    return [r for r in run.history if "collapsed" in r]


def test_guard_keeps_a_random_uniform_lenet_at_1000x_connected():
    cfg = dict(method="set", sparsity=0.999, quota="uniform", init="random", epochs=1, limit=2000, val_size=200,
               batch_size=50, update_every=2, drop_fraction=0.5, seed=1)
    torch.manual_seed(0)
    plain = train(lenet_300_100(), Config(**cfg))
    assert all(r["collapsed"] for r in _records(plain))           # the random start is cut, and SET never mends it
    torch.manual_seed(0)
    guarded = train(lenet_300_100(), Config(guard=True, **cfg))
    assert not any(r["collapsed"] for r in _records(guarded))
    assert {r["kept"] for r in _records(guarded)} == {r["kept"] for r in _records(plain)}


def test_reclaim_leaves_no_ineffective_weight_after_an_update():
    torch.manual_seed(0)
    model = lenet_300_100()
    names = ["1.weight", "3.weight", "5.weight"]
    params = dict(model.named_parameters())
    masks = select({n: torch.rand(params[n].shape) for n in names}, 0.98, quota="uniform")
    watch = Watch(Analyzer(model, input_shape=(1, 1, 28, 28)), reclaim=True)
    before = watch.analyze(masks)
    assert before.params_effective < before.params_nonzero / 3    # most of its weights were ineffective
    weights = {n: params[n].detach() * masks[n] for n in names}
    u = Update(1, 100, weights, masks, torch.Generator().manual_seed(0))
    new, res = watch.update(SET(total=100, update_every=1, drop_fraction=0.3), u)
    assert res.params_effective == res.params_nonzero == before.params_nonzero
    assert {n: int(m.sum()) for n, m in new.items()} == {n: int(m.sum()) for n, m in masks.items()}


def test_gmp_from_a_pruned_start_never_makes_it_denser():
    g = torch.Generator().manual_seed(0)
    w = {"a": torch.randn(20, 30, generator=g), "b": torch.randn(10, 20, generator=g)}
    start = {n: torch.rand(t.shape, generator=g) < 0.5 for n, t in w.items()}
    initial = 1 - sum(int(m.sum()) for m in start.values()) / sum(m.numel() for m in start.values())
    pol = GMP(total=100, sparsity=0.9, quota="uniform", update_every=10, end=0.5, initial=initial)
    masks, kept = start, [sum(int(m.sum()) for m in start.values())]
    for step in range(1, 101):
        if pol.due(step):
            masks = pol.update(Update(step, 100, {n: w[n] * masks[n] for n in w}, masks, g))
            assert all(bool((masks[n] <= start[n]).all()) for n in w)        # nothing pruned comes back
            kept.append(sum(int(m.sum()) for m in masks.values()))
    assert kept == sorted(kept, reverse=True) and kept[-1] == 80             # 10% of 800 at the end

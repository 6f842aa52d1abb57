"""EAST in training: the cyclic policy keeps exact ERK counts at every update and its schedule of updates,
DyReLU phased out during a run, the budget adjusted for shared weights, a seeded run repeated exactly,
a short run of the CPU-scaled setup at 99.9%, and one-line refusals."""
import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from connectome.resnet import resnet34_cifar
from connectome.train import Config, Update, train
from connectome.train.east import DyReLU, cyclic_density
from connectome.train.east.run import east_sparsity, weight_counts
from connectome.train.policies.east import EAST, erk_counts
from connectome_cli.main import main

SHAPES = {"a": (40, 30), "b": (20, 40), "c": (5, 20)}


def _masks(density, g):
    m = {}
    for (n, shape), k in zip(SHAPES.items(), erk_counts({n: torch.zeros(s) for n, s in SHAPES.items()},
                                                         density).values()):
        flat = torch.zeros(shape).flatten().bool()
        flat[torch.randperm(flat.numel(), generator=g)[:k]] = True
        m[n] = flat.view(shape)
    return m


def test_the_cyclic_policy_keeps_exact_erk_counts_at_every_update():
    g = torch.Generator().manual_seed(0)
    pol = EAST(total=200, sparsity=0.95, steps_per_epoch=10, cycles=2, cycle_epochs=4, update_every=5,
               long_every=3, end=0.9)
    masks = _masks(0.05, g)
    for step in range(1, 201):
        if not pol.due(step):
            continue
        weights = {n: torch.randn(s, generator=g) * masks[n] for n, s in SHAPES.items()}
        grads = {n: torch.randn(s, generator=g) for n, s in SHAPES.items()}
        masks = pol.update(Update(step, 200, weights, masks, g, grads))
        want = erk_counts(masks, pol.density_at(step))
        assert {n: int(m.sum()) for n, m in masks.items()} == want, step
        if step < 80:   # in the cycles: the cosine between 5% and 15%
            assert pol.density_at(step) == pytest.approx(cyclic_density(step, 0.05, 0.15, 40))
    assert {n: int(m.sum()) for n, m in masks.items()} == erk_counts(masks, 0.05)   # back to the budget
    due = [s for s in range(1, 201) if pol.due(s)]
    # every 5 steps through both cycles (80 steps), then every 15 until 90% of training
    assert due == list(range(5, 81, 5)) + [90, 105, 120, 135, 150, 165]


def test_growing_takes_the_largest_gradients_and_dropping_the_smallest_weights():
    g = torch.Generator().manual_seed(1)
    pol = EAST(total=100, sparsity=0.9, steps_per_epoch=10, cycles=1, cycle_epochs=4, update_every=10)
    masks = _masks(0.1, g)
    weights = {n: torch.randn(s, generator=g) * masks[n] for n, s in SHAPES.items()}
    grads = {n: torch.randn(s, generator=g) for n, s in SHAPES.items()}
    up = pol.update(Update(20, 100, weights, masks, g, grads))     # half-way: the density is 3x
    for n in SHAPES:
        grown = up[n] & ~masks[n]
        assert bool((up[n] | ~masks[n]).all())                    # nothing dropped on the way up
        rest = grads[n].abs()[~up[n]]
        if rest.numel() and grown.any():   # (a small layer goes dense under ERK at 30%)
            assert float(grads[n].abs()[grown].min()) >= float(rest.max())
    down = pol.update(Update(40, 100, weights, up, g, grads))      # the cycle's end: back to 10%
    for n in SHAPES:
        assert bool((down[n] <= up[n]).all())
        dropped = up[n] & ~down[n]
        if dropped.any():
            assert float(weights[n].abs()[dropped].max()) <= float(weights[n].abs()[down[n]].min())


def test_the_budget_counts_the_weights_sharing_saves():
    m = resnet34_cifar(width=8, share=2)
    own, shared = weight_counts(m)
    s = east_sparsity(m, 0.999)
    assert (1 - s) * own == pytest.approx(0.001 * (own + shared))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(784, 64), DyReLU(64), nn.Linear(64, 10)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x.flatten(1))))


def _run(seed=0):
    torch.manual_seed(seed)
    cfg = Config(method="east", sparsity=0.95, epochs=2, limit=1200, val_size=200, update_every=2, cycles=1,
                 cycle_epochs=1, seed=seed, phase_epochs=(0.5, 1.0))
    return train(Tiny(), cfg)


def test_a_run_phases_dyrelu_out_logs_every_update_and_repeats_under_its_seed():
    a, b = _run(), _run()
    assert float(a.model.act.beta) == 0.0          # phased out: an exact ReLU from epoch 1 on
    updates = [r for r in a.history if r["event"] == "update"]
    assert len(updates) == 4 and all("effective_sparsity" in r and "cut_layers" in r for r in updates)
    assert not any(r["collapsed"] for r in a.history)
    # the hyper-network is neither masked nor counted
    assert set(a.masks.masks) == {"fc1.weight", "fc2.weight"}
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_a_short_east_run_of_the_cpu_scaled_setup_at_999(tmp_path):
    r = CliRunner().invoke(main, ["train", "connectome:resnet34", "--arch-kwargs", "width=8", "--data", "fashion-mnist",
                                  "--cifar-form", "--method", "east", "--sparsity", "0.999", "--epochs", "1",
                                  "--limit", "640", "--val-size", "128", "--cycle-epochs", "0.5", "--update-every",
                                  "1", "-o", str(tmp_path / "east")])
    assert r.exit_code == 0, r.output
    assert "DyReLU's hyper-networks are dense and not counted in the sparsity" in r.stderr
    assert "updates that would have disconnected a layer:" in r.stdout
    records = [json.loads(line) for line in (tmp_path / "east" / "log.jsonl").read_text().splitlines()]
    updates = [x for x in records if x["event"] == "update"]
    assert len(updates) == 4 and not any(x["collapsed"] for x in records)
    assert all(0.99 < x["effective_sparsity"] < 1 for x in updates)
    # 0.1% of the 333,016 weights the model would have without sharing, in the 175,192 it owns
    assert records[0]["kept"] == 333 and updates[-1]["kept"] == 333


@pytest.mark.parametrize("args, says", [
    (["connectome:lenet_300_100", "--data", "mnist"], "--method east builds DyReLU and weight sharing"),
    (["connectome:resnet18", "--data", "fashion-mnist", "--cifar-form"], "no block would share"),
    (["connectome:resnet34", "--arch-kwargs", "width=4", "--data", "fashion-mnist", "--cifar-form", "--sparsity",
      "0.9999"], "leaves"),
    (["connectome:resnet34", "--data", "fashion-mnist", "--cifar-form", "--phase-epochs", "3"], "--phase-epochs"),
])
def test_bad_east_requests_are_one_line(args, says, tmp_path):
    r = CliRunner().invoke(main, ["train", *args, "--method", "east", "--epochs", "1", "--limit", "256",
                                  "--val-size", "64", "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) <= 2, r.output
    assert says in r.stderr.strip().splitlines()[-1]


def test_reclaim_and_guard_follow_the_cycle_counts():
    torch.manual_seed(0)
    run = train(Tiny(), Config(method="east", sparsity=0.995, epochs=1, limit=1200, val_size=200, update_every=2,
                               cycles=1, cycle_epochs=0.5, guard=True, reclaim=True))
    # 50,890 weights: 254 at the budget, 3x half-way through the 4-step cycle, back at its end
    assert [(r["step"], r["kept"]) for r in run.history if r["event"] == "update"] == [(2, 762), (4, 254)]

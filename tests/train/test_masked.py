"""Masked weights and their optimiser state stay exactly zero; a seed fixes a run bit for bit; an
interrupted run resumes to the same weights."""
import pytest
import torch

from connectome.models import lenet_300_100
from connectome.train import Config, Masks, TrainError, train


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5))


@pytest.mark.parametrize("make", [
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
], ids=["sgd-momentum", "sgd-nesterov", "adamw"])
def test_masked_weights_and_optimiser_state_stay_exactly_zero(make):
    net = _net()
    g = torch.Generator().manual_seed(1)
    masks = {n: torch.rand(p.shape, generator=g) < 0.3 for n, p in net.named_parameters() if n.endswith("weight")}
    m = Masks(net, masks)
    opt = make(net.parameters())
    for _ in range(300):
        x = torch.randn(16, 20, generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), torch.randint(0, 5, (16,), generator=g)).backward()
        m.mask_grads()
        opt.step()
        m.enforce(opt)
    for n, p in net.named_parameters():
        if n not in masks:
            continue
        off = ~masks[n]
        assert bool((p[off] == 0).all()) and bool((p[masks[n]] != 0).all())
        state = [v for v in opt.state[p].values() if isinstance(v, torch.Tensor) and v.shape == p.shape]
        assert state and all(bool((v[off] == 0).all()) for v in state)


def test_mask_names_and_shapes_are_checked():
    with pytest.raises(TrainError, match="does not have: nosuch"):
        Masks(_net(), {"nosuch": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(TrainError, match="do not match"):
        Masks(_net(), {"0.weight": torch.ones(2, dtype=torch.bool)})


SMALL = dict(epochs=2, limit=1500, val_size=300, batch_size=100, update_every=4)


def lenet(seed=0):
    torch.manual_seed(seed)  # the model's own initial weights: train() seeds only what it draws itself
    return lenet_300_100()


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", ["static", "rigl", "set", "gmp"])
def test_the_same_seed_gives_the_same_final_weights(method):
    runs = [train(lenet(), Config(method=method, sparsity=0.9, seed=3, **SMALL)) for _ in range(2)]
    a, b = (_weights(r.model) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["test_acc"] for r in runs[0].history if r["event"] == "epoch"] == \
           [r["test_acc"] for r in runs[1].history if r["event"] == "epoch"]
    other = train(lenet(), Config(method=method, sparsity=0.9, seed=4, **SMALL))
    assert not all(torch.equal(a[k], _weights(other.model)[k]) for k in a)


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path):
    cfg = Config(method="rigl", sparsity=0.9, seed=5, **SMALL)
    whole = train(lenet(), cfg)

    def stop(record):
        if record["event"] == "epoch":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(lenet(), cfg, out=str(tmp_path), log=stop)
    resumed = train(lenet(), cfg, out=str(tmp_path))
    a, b = _weights(whole.model), _weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r for r in resumed.history if r["event"] == "epoch"][-1]["epoch"] == 2
    with pytest.raises(TrainError, match="holds a run with other options .*sparsity: 0.9 then, 0.8 now"):
        train(lenet_300_100(), Config(method="rigl", sparsity=0.8, seed=5, **SMALL), out=str(tmp_path))
    # the same weight names and shapes, another activation: its weights would load, its history would lie
    tanh = lenet()
    tanh[2] = torch.nn.Tanh()
    assert [k for k in tanh.state_dict()] == [k for k in lenet().state_dict()]
    with pytest.raises(TrainError, match="holds a run of another model .*resume with the same model"):
        train(tanh, cfg, out=str(tmp_path))


def test_the_fit_probe_leaves_batch_norm_statistics_alone():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), torch.nn.BatchNorm1d(16),
                              torch.nn.ReLU(), torch.nn.Linear(16, 10))
    before = net[2].running_mean.clone()
    seen = []

    def at_start(record):  # before the first step: only the probe and the start analysis have run
        if record["event"] == "start":
            seen.append((net[2].running_mean.clone(), int(net[2].num_batches_tracked)))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(net, Config(method="static", sparsity=0.5, epochs=1, limit=300, val_size=100), log=at_start)
    assert torch.equal(seen[0][0], before) and seen[0][1] == 0


def test_a_loss_that_becomes_nan_is_one_line():
    with pytest.raises(TrainError, match="the loss became nan at epoch 1.*lower --lr"):
        train(lenet_300_100(), Config(lr=1e30, **SMALL))


def test_a_model_s_identity_ignores_object_addresses():
    from connectome.train.state import model_identity

    class WithFunction(torch.nn.Module):   # its printout names a function, with the address it has now
        def __init__(self):
            super().__init__()
            self.act, self.fc = (lambda x: x), torch.nn.Linear(2, 2)

        def extra_repr(self):
            return repr(self.act)

    assert " at 0x" in repr(WithFunction())
    assert model_identity(WithFunction()) == model_identity(WithFunction())
    assert model_identity(WithFunction()) != model_identity(torch.nn.Sequential(torch.nn.Linear(2, 2)))

"""The library contract of DESIGN.md: analyze(), effective_masks, to_dict(), mask sources."""
import json

import pytest
import torch
import torch.nn.utils.prune as prune
from torch import nn

import connectome
from connectome.models import INPUT_SHAPES, MODELS

KEYS = {"params_total", "params_nonzero", "params_effective", "direct_sparsity", "effective_sparsity",
        "direct_compression", "effective_compression", "collapsed", "layers", "unsupported_ops"}
LAYER_KEYS = {"name", "kind", "numel", "nonzero", "effective", "units_in", "units_out", "dead_in", "dead_out"}


def test_to_dict_schema_and_json():
    res = connectome.analyze(MODELS["lenet_5"](), torch.zeros(1, 1, 28, 28))
    d = res.to_dict()
    assert KEYS <= set(d) and all(LAYER_KEYS <= set(r) for r in d["layers"])
    assert json.loads(json.dumps(d)) == d
    assert d["direct_compression"] == pytest.approx(d["params_total"] / d["params_nonzero"])


def test_effective_masks_cover_every_prunable_weight_with_param_shapes():
    model = MODELS["resnet18"]()
    res = connectome.analyze(model, input_shape=INPUT_SHAPES["resnet18"])
    params = dict(model.named_parameters())
    assert set(res.effective_masks) == set(connectome.prunable_weights(model))
    for name, m in res.effective_masks.items():
        assert m.dtype == torch.bool and m.shape == params[name].shape


def test_masks_from_prune_buffers_and_names_without_orig():
    model = MODELS["lenet_300_100"]()
    prune.random_unstructured(model[1], "weight", amount=0.5)
    res = connectome.analyze(model, input_shape=(1, 1, 28, 28))
    assert "1.weight" in res.effective_masks and "1.weight_orig" not in res.effective_masks
    assert torch.equal(res.masks["1.weight"], model[1].weight_mask.bool())
    assert res.layers[0]["nonzero"] == int(model[1].weight_mask.sum())


def test_explicit_masks_override_and_bad_shapes_are_refused():
    model = MODELS["lenet_300_100"]()
    masks = {"5.weight": torch.zeros(10, 100, dtype=torch.bool)}
    assert connectome.analyze(model, input_shape=(1, 1, 28, 28), masks=masks).collapsed
    with pytest.raises(ValueError, match="shape"):
        connectome.analyze(model, input_shape=(1, 1, 28, 28), masks={"5.weight": torch.ones(3, 3)})


def test_analyzer_reuses_the_trace():
    model = MODELS["lenet_5"]()
    a = connectome.Analyzer(model, input_shape=(1, 1, 28, 28))
    full = a.run()
    pruned = a.run({"0.weight": torch.zeros(6, 1, 5, 5, dtype=torch.bool)})
    assert not full.collapsed and pruned.collapsed


def test_input_forms_tensor_tuple_and_shape():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(4, 2)

        def forward(self, x, y):
            return self.a(x) + self.b(y)
    m = Two()
    with torch.no_grad():
        m.b.weight.zero_()
    for res in (connectome.analyze(m, (torch.zeros(1, 3), torch.zeros(1, 4))),
                connectome.analyze(m, input_shape=[(1, 3), (1, 4)])):
        assert res.params_effective == 6


def test_unused_layers_are_ineffective():
    class WithAux(nn.Module):
        def __init__(self):
            super().__init__()
            self.main, self.aux = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            return self.main(x)
    res = connectome.analyze(WithAux(), input_shape=(1, 2))
    assert res.effective_masks["main.weight"].all() and not res.effective_masks["aux.weight"].any()


def test_untraceable_model_names_the_problem():
    class Bad(nn.Module):
        def forward(self, x):
            if x.sum() > 0:          # data-dependent control flow: no tracer can follow it
                return x.nonzero()
            return x
    with pytest.raises(connectome.TraceError, match="Bad"):
        connectome.analyze(Bad(), input_shape=(1, 2))


def test_model_is_not_modified():
    class MakesTensors(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return self.lin(x).index_select(1, torch.tensor([3, 2, 1, 0]))  # fx lifts this tensor
    m = MakesTensors()
    before = (set(vars(m)), {k: v.clone() for k, v in m.state_dict().items()})
    res = connectome.analyze(m, input_shape=(1, 4))
    assert res.unsupported_ops == [] and res.params_effective == 16
    assert set(vars(m)) == before[0]
    assert all(torch.equal(v, before[1][k]) for k, v in m.state_dict().items())


def test_model_is_left_in_its_mode():
    m = MODELS["vgg19"]().train()
    connectome.analyze(m, input_shape=(1, 3, 32, 32))
    assert m.training


def test_units_and_channel_adjacency():
    a = nn.Linear(2, 3, bias=False)
    b = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        a.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0]]))
        b.weight.copy_(torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    res = connectome.analyze(nn.Sequential(a, nn.ReLU(), b), input_shape=(1, 2))
    u = res.units("0")
    assert u["alive_from_input"].tolist() == [False, True, True]
    assert u["alive_to_output"].tolist() == [True, True, False]
    assert res.channel_adjacency("0").toarray().tolist() == [[0, 0], [1, 1], [0, 0]]
    up = nn.ConvTranspose2d(2, 3, 2, stride=2)     # weight (in, out, k, k): adjacency is (out, in)
    adj = connectome.analyze(nn.Sequential(up), input_shape=(1, 2, 2, 2)).channel_adjacency("0")
    assert adj.shape == (3, 2) and adj.toarray().min() == 4
    with pytest.raises(KeyError):
        res.units("nope")


def test_trace_error_points_at_user_code():
    class Bad(nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x.nonzero()
            return x
    with pytest.raises(connectome.TraceError, match=r"test_api\.py:\d+ in forward"):
        connectome.analyze(Bad(), input_shape=(1, 2))

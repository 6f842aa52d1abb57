"""Tightness: effective masks equal the path-count oracle, weight for weight, on real architectures."""
import pytest
import torch

import connectome
from connectome.models import INPUT_SHAPES, MODELS
from oracle import oracle_masks, random_masks

SPARSITIES = [0.0, 0.5, 0.9, 0.99, 0.999]

# Small inputs keep CI fast; they also make padding-only taps common (resnet18's last stage at 32x32
# is 1x1, so 8 of 9 taps of its 3x3 convs read only padding).
ZOO = {
    "resnet18": 32, "resnet50": 32, "vgg19": 32, "vgg19_bn": 32, "densenet121": 32, "googlenet": 48,
    "inception_v3": 75, "mobilenet_v2": 32, "mobilenet_v3_small": 32, "efficientnet_b0": 32,
    "shufflenet_v2_x1_0": 32, "squeezenet1_0": 48, "regnet_y_400mf": 32, "mnasnet0_5": 32, "alexnet": 64,
}


def assert_tight(model, shape, sparsity, seed=0, tracer="auto"):
    masks = random_masks(model, sparsity, seed)
    res = connectome.analyze(model, input_shape=shape, masks=masks, tracer=tracer)
    ref = oracle_masks(model, [shape], masks)
    assert set(res.effective_masks) == set(ref)
    wrong = {k: int((res.effective_masks[k] != ref[k]).sum()) for k in ref}
    assert not any(wrong.values()), {k: v for k, v in wrong.items() if v}
    assert res.unsupported_ops == []
    return res


@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("name", list(MODELS))
def test_paper_models(name, sparsity):
    assert_tight(MODELS[name](), INPUT_SHAPES[name], sparsity)


@pytest.mark.parametrize("name", list(ZOO))
def test_torchvision_zoo(name):
    tv = pytest.importorskip("torchvision")
    model = tv.models.get_model(name, weights=None)
    size = ZOO[name]
    for sparsity in SPARSITIES:
        assert_tight(model, (1, 3, size, size), sparsity, seed=1)


@pytest.mark.parametrize("tracer", ["export", "export-core"])
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x1_0", "googlenet"])
def test_aten_forms_are_tight(name, tracer):
    tv = pytest.importorskip("torchvision")
    model = tv.models.get_model(name, weights=None)
    res = assert_tight(model, (1, 3, 48, 48), 0.9, seed=2, tracer=tracer)
    assert res.tracer == tracer


def test_padding_only_taps_occur_and_match():
    model = MODELS["resnet18"]()
    res = assert_tight(model, (1, 3, 8, 8), 0.0)   # 1x1 maps from stage 4 on: padding taps everywhere
    w = res.effective_masks["layer4.1.conv2.weight"]
    assert w[:, :, 1, 1].all() and not w[:, :, 0, :].any()


def test_unpruned_model_everything_effective():
    res = connectome.analyze(MODELS["lenet_5"](), input_shape=INPUT_SHAPES["lenet_5"])
    assert res.params_effective == res.params_nonzero == res.params_total
    assert not res.collapsed and res.effective_sparsity == res.direct_sparsity == 0


def test_one_layer_fully_pruned_collapses():
    model = MODELS["vgg19"]()
    masks = {name: torch.ones_like(p, dtype=torch.bool) for name, p in model.named_parameters()
             if name in connectome.prunable_weights(model)}
    fifth_conv = list(masks)[4]
    masks[fifth_conv] = torch.zeros_like(masks[fifth_conv])
    res = connectome.analyze(model, input_shape=(1, 3, 32, 32), masks=masks)
    assert res.collapsed and res.params_effective == 0 and res.effective_compression is None
    assert res.to_dict()["collapsed"] is True

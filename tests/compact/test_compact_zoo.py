"""Compaction of real torchvision models with random 99% masks and whole dead channels: the result has the
same outputs in float64 (relative 1e-9), fewer parameters, and no dead unit left."""

import pytest
import torch

from connectome.analysis import analyze
from connectome.compact import compact

torchvision = pytest.importorskip("torchvision")

MODELS = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "densenet121",
    "efficientnet_b0",
    "vgg16_bn",
    "shufflenet_v2_x1_0",
    "vit_b_16",
    "swin_t",
]


def pruned(name: str, seed: int = 0) -> torch.nn.Module:
    """99% of the weights of every wide layer zeroed at random (half of a narrow one's: a depthwise kernel
    has 9), and the first three output channels of every fifth layer zeroed whole."""
    kw = {"image_size": 32} if name.startswith("vit") else {}
    m = getattr(torchvision.models, name)(**kw).eval().double()
    gen = torch.Generator().manual_seed(seed)
    layers = [mod for mod in m.modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        for i, mod in enumerate(layers):
            w = mod.weight
            if not w.any():  # ViT's head starts at zero
                w.normal_(generator=gen)
            density = 0.01 if w[0].numel() >= 32 else 0.5
            w.mul_(torch.rand(w.shape, generator=gen, dtype=w.dtype) < density)
            if i % 5 == 2 and i < len(layers) - 1:
                w[:3] = 0
    return m


@pytest.mark.parametrize("name", MODELS)
def test_a_compacted_model_has_the_outputs_of_the_original_and_no_dead_unit(name):
    m = pruned(name)
    small = compact(m, input_shape=(1, 3, 32, 32))
    assert small.compaction.error <= 1e-9
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 32, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        want, got = m(x), small(x)
    assert float((want - got).abs().max() / want.abs().max()) <= 1e-9
    before, after = small.compaction.params
    assert after < before == sum(p.numel() for p in m.parameters())
    assert after == sum(p.numel() for p in small.parameters())
    res = analyze(small, input_shape=(1, 3, 32, 32))
    dead = [r["name"] for r in res.layers if r["dead_in"] or r["dead_out"]]
    assert dead == []


def test_a_compacted_resnet_exports_and_its_export_gives_the_same_outputs():
    m = pruned("resnet18")
    small = compact(m, input_shape=(1, 3, 32, 32))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ep = torch.export.export(small, (x,))
    with torch.no_grad():
        assert torch.equal(ep.module()(x), small(x))


def test_a_compacted_resnext_loses_whole_groups_and_keeps_its_outputs():
    m = pruned("resnext50_32x4d")
    small = compact(m, input_shape=(1, 3, 32, 32))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want, got = m(x), small(x)
    assert float((want - got).abs().max() / want.abs().max()) <= 1e-9
    assert small.get_submodule("layer2.0.conv2").groups < 32
    assert small.compaction.params[1] < 0.85 * small.compaction.params[0]
    res = analyze(small, input_shape=(1, 3, 32, 32))
    grouped = {n for n, mod in small.named_modules() if isinstance(mod, torch.nn.Conv2d) and mod.groups > 1}
    # a dead row inside a group that stays cannot go: the groups of a convolution keep one size
    assert {r["name"] for r in res.layers if r["dead_in"] or r["dead_out"]} <= grouped
